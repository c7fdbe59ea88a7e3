#!/usr/bin/env bash
# Benchmark: the instructions the MCP server executes per tool call, counted by callgrind
# (valgrind). Unlike time, the count does not depend on the machine's speed or on what else
# runs, so two builds can be compared on any day: the same binary gives the same count to
# within a fraction of a percent.
#
#   bash scripts/bench-mcp-instructions.sh [calls]      (default 300)
#       AGENTBUS_BIN=path: measure that binary instead of a release build of this checkout
#
# For each case, `agentbus up` (embedded backend, SQLite) runs under callgrind on 127.0.0.1;
# benches/mcp_calls.py sends 50 calls to warm it up, the counters are zeroed, then it sends
# `calls` more one after another, and the counters are read. Cases: GET /health (the
# plain-HTTP floor), kv_get and kv_set in a session (2025-06-18) and without one
# (2026-07-28). Results: docs/benchmarks/mcp-server.md.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (Debian: apt-get install valgrind)" >&2; exit 1; }
calls=${1:-300}
. scripts/bench-server.sh
wrap="valgrind --tool=callgrind --callgrind-out-file=$dir/callgrind.%p"

# A table row: the instructions per call of one case, TOOL PROTOCOL LABEL.
count() {
  local tool=$1 protocol=$2 label=$3 total
  start_server
  python3 benches/mcp_calls.py "$port" "$token" "$tool" 50 "$protocol"
  callgrind_control --zero "$pid" >/dev/null 2>&1
  python3 benches/mcp_calls.py "$port" "$token" "$tool" "$calls" "$protocol"
  callgrind_control --dump "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  total=$(grep -h '^summary:' "$dir/callgrind.$pid.1" | awk '{print $2}')
  rm -f "$dir"/callgrind.*
  echo "| $label | $((total / calls)) |"
}

echo "| case | instructions per call |"
echo "|---|---|"
count health - "GET /health"
for tool in kv_get kv_set; do
  for protocol in 2025-06-18 2026-07-28; do
    count "$tool" "$protocol" "$tool, $protocol"
  done
done
