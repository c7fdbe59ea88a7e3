#!/usr/bin/env bash
# Soak benchmark: a million mixed MCP calls or more over 64 sessions against one `agentbus up`
# on 127.0.0.1, with the server's resident memory sampled as it goes.
#
#   bash scripts/bench-soak.sh [seconds] [connections] [sample seconds]   (defaults: 400 64 20)
#       AGENTBUS_BIN=path: measure that binary instead of building this checkout
#
# The mix (benches/mcp_wrk.lua, `mixed`): per ten calls four kv_get, two kv_set, one each of
# kv_list, kv_delete, events_send and tools/list, over 1,000 keys. The rate limit and the
# quotas are lifted (a million calls of one tenant would pass them by design). One wrk run
# holds its 64 sessions for the whole time (each connection is one session; a second run would
# open 64 more, and the server holds at most 128 per token). A call fails when its answer is
# not a JSON-RPC result or is a tool error; wrk's socket errors are added. Memory is "flat"
# when the last sample is within 10 % of the first one taken after the first minute.
# Results: docs/benchmarks/soak.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-400}
conns=${2:-64}
every=${3:-20}
. scripts/bench-server.sh
start_server --quota-kv-kib-per-day 0 --quota-events-per-day 0 --quota-kv-entries 0
echo "idle RSS: $(rss) MiB"
cpu0=$(cpu)
wrk -t"$conns" -c"$conns" -d"${secs}s" --timeout 10s --latency -s benches/mcp_wrk.lua \
  "http://127.0.0.1:$port/mcp" -- "$token" mixed >"$dir/wrk" 2>"$dir/err" &
load=$!
echo "| after (s) | RSS (MiB) |"
echo "|---|---|"
t=0; samples=()
while kill -0 $load 2>/dev/null; do
  sleep "$every"; t=$((t + every))
  kill -0 $load 2>/dev/null || break
  m=$(rss); samples+=("$t:$m"); echo "| $t | $m |"
done
wait $load
out=$(cat "$dir/wrk")
calls=$(echo "$out" | awk '/requests in/ {print $1}')
rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
p50=$(echo "$out" | awk '$1=="50%" {print $2}')
p99=$(echo "$out" | awk '$1=="99%" {print $2}')
bad=$(grep -c "call failed" "$dir/err" || true)
sock=$(echo "$out" | awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}')
us=$(awk "BEGIN{printf \"%.1f\", ($(cpu) - $cpu0) / $tick * 1e6 / $calls}")
first=""; last=""
for s in "${samples[@]}"; do
  [ "${s%%:*}" -ge 60 ] && [ -z "$first" ] && first=${s##*:}
  last=${s##*:}
done
echo
echo "calls: $calls in $secs s over $conns sessions ($rate/s, p50 $p50, p99 $p99)"
echo "failed calls: $bad; socket errors: ${sock:-0}; server CPU per call: $us µs"
if [ -n "$first" ]; then
  echo "RSS: $first MiB at the first sample after a minute, $last MiB at the end ($(awk "BEGIN{printf \"%+.1f\", ($last - $first) * 100 / $first}") %)"
else
  echo "RSS: ${last:-?} MiB at the end (a run under a minute has no sample to compare it with)"
fi
grep "call failed" "$dir/err" | head -3 || true
