#!/usr/bin/env bash
# Soak benchmark: a million mixed MCP calls over 64 sessions against one `agentbus up` on
# 127.0.0.1, with the server's resident memory after every round of calls.
#
#   bash scripts/bench-soak.sh [calls] [connections] [round seconds]   (defaults: 1000000 64 10)
#       AGENTBUS_BIN=path: measure that binary instead of building this checkout
#
# The mix (benches/mcp_wrk.lua, `mixed`): per ten calls four kv_get, two kv_set, one each of
# kv_list, kv_delete, events_send and tools/list, over 1,000 keys. The rate limit and the daily
# quotas are lifted (a million calls of one tenant would pass them by design). wrk runs in
# rounds until the calls are made; a call fails when its answer is not a JSON-RPC result or is
# a tool error, and wrk's own errors (connect, read, timeout, non-2xx) are added. Memory is
# "flat" when the last round's RSS is within 10 % of the first round's. Results:
# docs/benchmarks/soak.md.
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-1000000}
conns=${2:-64}
round=${3:-10}
command -v wrk >/dev/null || { echo "wrk is not installed (Debian: apt-get install wrk)" >&2; exit 1; }
bin=${AGENTBUS_BIN:-}
if [ -z "$bin" ]; then cargo build --release -p cli --quiet; bin=$PWD/target/release/agentbus; fi
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" up --data-dir "$dir/data" --port "$port" --rate-limit 100000000 \
  --quota-kv-kib-per-day 0 --quota-events-per-day 0 --quota-kv-entries 0 >"$dir/out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q "tenant default): " "$dir/out" 2>/dev/null && break; sleep 0.1; done
token=$(sed -n 's/.*tenant default): \([^ ]*\).*/\1/p' "$dir/out" | head -1)
rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status"; }
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
tick=$(getconf CLK_TCK)
echo "idle RSS: $(rss) MiB"
done_calls=0; failed=0; n=0; first=""; cpu0=$(cpu); start=$(date +%s.%N)
echo "| round | calls | calls/s | p50 | p99 | failed | RSS (MiB) |"
echo "|---|---|---|---|---|---|---|"
while [ "$done_calls" -lt "$total" ]; do
  n=$((n + 1))
  out=$(wrk -t"$conns" -c"$conns" -d"${round}s" --latency -s benches/mcp_wrk.lua \
    "http://127.0.0.1:$port/mcp" -- "$token" mixed 2>"$dir/err")
  calls=$(echo "$out" | awk '/requests in/ {print $1}')
  rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  bad=$(grep -c "call failed" "$dir/err" || true)
  wrk_errors=$(echo "$out" | awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10} /Non-2xx/ {print $5}' | awk '{s += $1} END {print s + 0}')
  bad=$((bad + wrk_errors))
  failed=$((failed + bad)); done_calls=$((done_calls + calls))
  mem=$(rss); [ -n "$first" ] || first=$mem
  echo "| $n | $calls | $rate | $p50 | $p99 | $bad | $mem |"
done
secs=$(awk "BEGIN{print $(date +%s.%N) - $start}")
us=$(awk "BEGIN{printf \"%.1f\", ($(cpu) - $cpu0) / $tick * 1e6 / $done_calls}")
echo
echo "calls: $done_calls in ${secs%.*} s over $conns sessions; failed: $failed; server CPU per call: $us µs"
echo "RSS: first round $first MiB, last round $mem MiB ($(awk "BEGIN{printf \"%+.1f\", ($mem - $first) * 100 / $first}") %)"
