#!/usr/bin/env bash
# Runs end-to-end tests again and again to show they do not flake (not part of CI):
#   bash scripts/repeat.sh [N] [FILTER...]
# N defaults to 50; the filters default to the tests that used to wait on time.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}
shift || true
filters=("$@")
if [ ${#filters[@]} -eq 0 ]; then
  filters=(sigterm_during_a_burst expired_and_revoked_tokens the_embedded_target_moves up_small_serves)
fi
# Build once, then run the test binary itself: no cargo in the loop.
bin=$(cargo test -p cli --test e2e --no-run --message-format=json 2>/dev/null \
  | awk -F'"executable":"' '/"executable":"[^"]*e2e-/ { split($2, a, "\""); print a[1] }' | tail -1)
[ -x "$bin" ] || { echo "could not build the e2e tests" >&2; exit 1; }
failed=0
for i in $(seq 1 "$n"); do
  if ! "$bin" --quiet "${filters[@]}" >/tmp/repeat-$$.log 2>&1; then
    failed=$((failed + 1))
    echo "run $i FAILED:"; tail -30 /tmp/repeat-$$.log
  fi
done
rm -f /tmp/repeat-$$.log
echo "$n runs of ${filters[*]}: $((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
