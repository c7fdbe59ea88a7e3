# Sourced by the MCP benchmarks: starts `agentbus up` on a free 127.0.0.1 port with an empty
# data directory and sets $bin, $dir, $port, $pid and $token, plus rss and cpu (the server's
# resident MiB and user+system clock ticks) and $tick (ticks per second).
#
#   start_server [extra `up` flags...]
#       AGENTBUS_BIN=path: that binary instead of a release build of this checkout
#       $wrap: a command the server runs under (valgrind, say); empty by default
bin=${AGENTBUS_BIN:-}
if [ -z "$bin" ]; then cargo build --release -p cli --quiet; bin=$PWD/target/release/agentbus; fi
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tick=$(getconf CLK_TCK)
rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status"; }
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
start_server() {
  rm -rf "$dir/data"
  ${wrap:-} "$bin" up --data-dir "$dir/data" --port "$port" --rate-limit 100000000 "$@" >"$dir/out" 2>"$dir/err" &
  pid=$!
  trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
  for _ in $(seq 600); do grep -q "tenant default): " "$dir/out" 2>/dev/null && break; sleep 0.1; done
  token=$(sed -n 's/.*tenant default): \([^ ]*\).*/\1/p' "$dir/out" | head -1)
  [ -n "$token" ] || { echo "the server did not start:" >&2; cat "$dir/out" "$dir/err" >&2; exit 1; }
}
