#!/usr/bin/env bash
# Benchmark: API calls and wall time of a from-scratch deploy of the extra-small tier and of a
# no-op plan, at parallelism 1 and 8, against a local moto server on 127.0.0.1.
#
#   bash scripts/bench-deploy.sh [runs]      (default 5 runs per case; prints a Markdown table)
#
# Results are kept in docs/benchmarks/deploy-xs.md. moto answers in microseconds, so wall
# times here measure the engine and the client, not AWS; the API-call counts carry over to AWS.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
.venv/bin/python -c 'import moto' 2>/dev/null || { python3 -m venv .venv && .venv/bin/pip install -q 'moto[server]==5.2.5' 'cbor2>=5.6,<6'; }
cargo build --release -p cli --quiet
bin=target/release/agentbus
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MOTO_ECS_SERVICE_RUNNING=1 .venv/bin/python tests/moto/server.py -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true NO_COLOR=1
# Deploys refuse images their registry lacks: register the (never pulled) image in moto's ECR.
.venv/bin/python tests/moto/seed_image.py "$AWS_ENDPOINT_URL" bench/agentbus bench
image=123456789012.dkr.ecr.us-east-1.amazonaws.com/bench/agentbus:bench

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }

echo "| case | parallelism | API calls | writes | median wall time (s) | runs |"
echo "|---|---|---|---|---|---|"
for par in 1 8; do
  dep_times=(); plan_times=(); calls=""; writes=""; pcalls=""
  for i in $(seq "$runs"); do
    env="b${par}r${i}-$$"; env=${env:0:16}
    t0=$(now)
    out=$($bin deploy xs --env "$env" --image "$image" --yes --json --parallelism "$par" 2>/dev/null)
    t1=$(now)
    dep_times+=("$(awk "BEGIN{print $t1 - $t0}")")
    calls=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_calls"])')
    writes=$(echo "$out" | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["write_calls"].values()))')
    t0=$(now)
    out=$($bin plan xs --env "$env" --json --parallelism "$par" 2>/dev/null)
    t1=$(now)
    plan_times+=("$(awk "BEGIN{print $t1 - $t0}")")
    pcalls=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_calls"])')
  done
  echo "| deploy xs from scratch | $par | $calls | $writes | $(printf '%s\n' "${dep_times[@]}" | median) | $runs |"
  echo "| no-op plan | $par | $pcalls | 0 | $(printf '%s\n' "${plan_times[@]}" | median) | $runs |"
done
