#!/usr/bin/env bash
# Benchmark: how many call-latencies a no-op plan and a from-scratch deploy take, with every
# AWS call delayed as a region would delay it.
#
#   bash scripts/bench-plan-latency.sh [delay_ms] [runs] [tiers]
#       defaults: 200 ms, 3 runs per case, "xs small"; prints a Markdown table
#       AGENTBUS_BIN=path: measure that binary instead of building this checkout
#
# A local moto server on 127.0.0.1 answers the calls; benches/latency_proxy.py sits in front of
# it and holds every request for delay_ms. Each case runs through the proxy with no delay (t0)
# and with the delay (tD). The number of call latencies k on the command's critical path lies
# between (tD - t0) / D (the process's own work and the emulator's, all hidden behind the
# delays) and tD / D (none of it hidden): the emulator is one Python process, so with a delay
# much longer than t0 the two bounds meet. Results are kept in docs/benchmarks/plan-latency.md.
set -euo pipefail
cd "$(dirname "$0")/.."
delay=${1:-200}
runs=${2:-3}
tiers=${3:-xs small}
.venv/bin/python -c 'import moto' 2>/dev/null || { python3 -m venv .venv && .venv/bin/pip install -q 'moto[server]==5.2.5' 'cbor2>=5.6,<6'; }
# AGENTBUS_BIN=path measures another build (an older one, to compare).
bin=${AGENTBUS_BIN:-}
if [ -z "$bin" ]; then cargo build --release -p cli --quiet; bin=$PWD/target/release/agentbus; fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

moto_port=$(free_port)
# The emulator's eventual-consistency shims (a role unusable for a second after CreateRole,
# PITR refused for a second after a table becomes ACTIVE) wait in real time, not in calls:
# they are off here, so that only call latencies are counted.
AGENTBUS_SHIM_IAM_SECONDS=0 AGENTBUS_SHIM_PITR_SECONDS=0 MOTO_ECS_SERVICE_RUNNING=1 .venv/bin/python tests/moto/server.py -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
wait_port "$moto_port"
# One proxy without delay, one with: the same path for both measurements.
tmp=$(mktemp -d)
proxy() {
  .venv/bin/python benches/latency_proxy.py --upstream "127.0.0.1:$moto_port" --delay-ms "$1" >"$tmp/$1" 2>/dev/null &
  pids+=($!)
}
proxy 0
proxy "$delay"
for _ in $(seq 100); do [ -s "$tmp/0" ] && [ -s "$tmp/$delay" ] && break; sleep 0.05; done
fast=$(head -1 "$tmp/0"); slow=$(head -1 "$tmp/$delay")

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 \
  AWS_EC2_METADATA_DISABLED=true NO_COLOR=1
# Deploys refuse images their registry lacks: register the (never pulled) image in moto's ECR.
.venv/bin/python tests/moto/seed_image.py "http://127.0.0.1:$moto_port" bench/agentbus bench
.venv/bin/python tests/moto/seed_image.py "http://127.0.0.1:$moto_port" bench/agentbus-agents bench
image=123456789012.dkr.ecr.us-east-1.amazonaws.com/bench/agentbus:bench
agent_image=123456789012.dkr.ecr.us-east-1.amazonaws.com/bench/agentbus-agents:bench

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }
# timed PORT CMD...: runs the command against the emulator behind PORT; prints "seconds calls".
timed() {
  local port=$1; shift
  local t0 t1 out
  t0=$(now)
  out=$(AWS_ENDPOINT_URL=http://127.0.0.1:$port "$bin" "$@" --json 2>/dev/null)
  t1=$(now)
  echo "$(awk "BEGIN{print $t1 - $t0}") $(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_calls"])')"
}

echo "| case | API calls | t0: no delay (s) | tD: ${delay} ms per call (s) | call-latencies: (tD - t0)/D .. tD/D | runs |"
echo "|---|---|---|---|---|---|"
n=0
for tier in $tiers; do
  # Medium and up run agent tasks from an image of their own.
  images=(--image "$image"); case $tier in medium|large) images+=(--agent-image "$agent_image") ;; esac
  for case in deploy plan; do
    fast_t=(); slow_t=(); calls=""
    for i in $(seq "$runs"); do
      for port in "$fast" "$slow"; do
        n=$((n + 1)); env="l$n-$$"; env=${env:0:16}
        # Every case starts from a fresh env; a plan's env is deployed first, without delay.
        if [ "$case" = plan ]; then
          AWS_ENDPOINT_URL=http://127.0.0.1:$fast "$bin" deploy "$tier" --env "$env" "${images[@]}" --yes --json >/dev/null 2>&1
          r=$(timed "$port" plan "$tier" --env "$env")
        else
          r=$(timed "$port" deploy "$tier" --env "$env" "${images[@]}" --yes --parallelism 8)
        fi
        calls=${r#* }
        # moto, like an account, allows 10 log resource policies: remove each env after use.
        AWS_ENDPOINT_URL=http://127.0.0.1:$fast "$bin" destroy --env "$env" --destroy-data --yes --json >/dev/null 2>&1
        if [ "$port" = "$fast" ]; then fast_t+=("${r% *}"); else slow_t+=("${r% *}"); fi
      done
    done
    f=$(printf '%s\n' "${fast_t[@]}" | median); s=$(printf '%s\n' "${slow_t[@]}" | median)
    label="no-op plan $tier"; [ "$case" = deploy ] && label="deploy $tier from scratch, parallelism 8"
    echo "| $label | $calls | $f | $s | $(awk "BEGIN{printf \"%.1f .. %.1f\", ($s - $f) * 1000 / $delay, $s * 1000 / $delay}") | $runs |"
  done
done
