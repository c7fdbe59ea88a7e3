#!/usr/bin/env bash
# The suite's opt-in target against a real AWS account (never run by CI: it creates billable
# resources). It builds the release binary, pushes the server image to a fresh workspace's ECR,
# deploys extra-small (and, with `small`, moves to small), waits until the dashboard answers
# /health from this machine, checks that a token reads /api/status and that the plan is clean,
# then destroys everything with --destroy-data, also when a step fails.
#
#   AGENTBUS_REAL_ACCOUNT=yes bash scripts/real-account.sh [xs|small]
#
# Credentials and region come from the standard AWS chain. A run costs cents (a Spot task and,
# for small, a load balancer for a few minutes). See the README's first-account checklist.
set -euo pipefail
cd "$(dirname "$0")/.."
tier=${1:-xs}
case "$tier" in xs | small) ;; *) echo "usage: $0 [xs|small]" >&2; exit 2 ;; esac
if [ "${AGENTBUS_REAL_ACCOUNT:-}" != yes ]; then
  echo "this creates billable resources in the account your AWS credentials name;" >&2
  echo "set AGENTBUS_REAL_ACCOUNT=yes to go on" >&2
  exit 2
fi
if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
  echo "AWS_ENDPOINT_URL is set ($AWS_ENDPOINT_URL): this target is for a real account" >&2
  exit 2
fi
cargo build --release -p cli --quiet
bin=target/release/agentbus
env="rt$(date +%s | tail -c 9)"
me=$(curl -fsS https://checkip.amazonaws.com | tr -d '[:space:]')
echo "workspace $env, dashboard open to $me/32"

cleanup() {
  echo "destroying $env"
  $bin destroy --env "$env" --destroy-data --yes || echo "destroy failed: run it again: $bin destroy --env $env --destroy-data --yes" >&2
}
trap cleanup EXIT

wait_healthy() {
  local url=$1
  for _ in $(seq 90); do
    if curl -fsS -m 5 "$url/health" >/dev/null 2>&1; then
      echo "healthy: $url"
      return 0
    fi
    sleep 5
  done
  echo "the dashboard at $url did not answer /health within 7.5 minutes" >&2
  return 1
}

$bin image push --env "$env"
out=$($bin deploy xs --env "$env" --allow-cidr "$me/32" --yes --json)
url=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("dashboard_url") or "")')
[ -n "$url" ] || { echo "the deploy named no dashboard address: $out" >&2; exit 1; }
wait_healthy "$url"
if [ "$tier" = small ]; then
  out=$($bin deploy small --env "$env" --yes --json)
  url=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("dashboard_url") or "")')
  wait_healthy "$url"
fi
token=$($bin token create --env "$env" --tenant check --role viewer --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
curl -fsS -m 10 -H "Authorization: Bearer $token" "$url/api/status" >/dev/null
echo "token accepted by $url/api/status"
$bin plan "$tier" --env "$env" --detailed-exitcode
echo "converged; all checks passed"
