#!/usr/bin/env bash
# Benchmark: size of the server image, time to build it, and time to push it to a registry
# on 127.0.0.1 (Debian's docker-registry), from the release build.
#
#   bash scripts/bench-image.sh [runs]      (default 5 runs per case; prints a Markdown table)
#
# Results are kept in docs/benchmarks/image.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
command -v docker-registry >/dev/null || { echo "needs docker-registry (apt install docker-registry)"; exit 1; }
cargo build --release -p cli --quiet
bin=target/release/agentbus
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/config.yml" <<YAML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/data
http:
  addr: 127.0.0.1:$port
YAML
docker-registry serve "$work/config.yml" >/dev/null 2>&1 &
reg=$!
trap 'kill $reg 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
export NO_COLOR=1

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }

build_t=(); push_t=(); repush_t=()
for i in $(seq "$runs"); do
  t0=$(now); out=$($bin image build --out "$work/layout" --json 2>/dev/null); t1=$(now)
  build_t+=("$(awk "BEGIN{print $t1 - $t0}")")
  t0=$(now); $bin image push --registry "127.0.0.1:$port" --repository "bench$i" --insecure --json >/dev/null 2>&1; t1=$(now)
  push_t+=("$(awk "BEGIN{print $t1 - $t0}")")
  t0=$(now); $bin image push --registry "127.0.0.1:$port" --repository "bench$i" --insecure --json >/dev/null 2>&1; t1=$(now)
  repush_t+=("$(awk "BEGIN{print $t1 - $t0}")")
done
read -r digest binary compressed layer libs <<<"$(echo "$out" | python3 -c '
import json,sys; s=json.load(sys.stdin)["summary"]
print(s["digest"], s["binary_bytes"], s["compressed_bytes"], s["layer_bytes"], len(s["libraries"]))')"
echo "image $digest: binary $((binary/1000)) kB, layer $((layer/1000)) kB uncompressed, $((compressed/1000)) kB compressed, $libs shared libraries (with the loader)"
echo
echo "| case | median wall time (s) | runs |"
echo "|---|---|---|"
echo "| image build (reads the binary, writes the OCI layout) | $(printf '%s\n' "${build_t[@]}" | median) | $runs |"
echo "| image push, new repository (build + upload) | $(printf '%s\n' "${push_t[@]}" | median) | $runs |"
echo "| image push, already there (build + check) | $(printf '%s\n' "${repush_t[@]}" | median) | $runs |"
