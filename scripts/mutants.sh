#!/usr/bin/env bash
# Mutation testing of the engine's diff and plan and of the IAM policy code
# (.cargo/mutants.toml): each mutant is a small change to the code (an operator flipped, a
# function returning a default, a match arm gone) that the tests must notice.
#   bash scripts/mutants.sh             every mutant (about 20 minutes on 2 cores)
#   bash scripts/mutants.sh --shard K/N one N-th of them, K from 0 to N-1 (CI runs one, a different
#                                       one each commit)
# A mutant the tests miss must be listed in tests/mutants/missed.md with the reason it cannot
# or need not be caught: an unlisted one fails the run, and so, on a whole run, does a listed
# one the tests now catch (the list must not hide anything).
set -euo pipefail
cd "$(dirname "$0")/.."
version=27.1.0
if ! cargo mutants --version 2>/dev/null | grep -qx "cargo-mutants $version"; then
  cargo install --locked --quiet "cargo-mutants@$version"
fi
shard=()
case "${1:-}" in
  --shard) shard=(--shard "$2") ;;
  "") ;;
  *) echo "usage: $0 [--shard K/N]" >&2; exit 2 ;;
esac
# The mutants are made in this tree, one at a time, and undone after each.
set +e
cargo mutants --in-place --no-shuffle "${shard[@]}"
rc=$?
set -e
# 0: every mutant caught; 2: some missed; 3: some timed out (a hang counts as caught).
case $rc in 0|2|3) ;; *) echo "cargo mutants failed ($rc)" >&2; exit 1 ;; esac
# A mutant's name without its line and column, which move with every edit above it.
name() { sed -E 's/^([^:]+):[0-9]+:[0-9]+: /\1: /'; }
missed=$(name < mutants.out/missed.txt | sort -u)
listed=$(sed -nE 's/^- `([^`]+)`.*/\1/p' tests/mutants/missed.md | sort -u)
unlisted=$(comm -23 <(echo "$missed") <(echo "$listed") | sed '/^$/d')
status=0
if [ -n "$unlisted" ]; then
  echo "missed by the tests and not listed in tests/mutants/missed.md (add a test, or list it with the reason):"
  echo "$unlisted" | sed 's/^/  /'
  status=1
fi
if [ ${#shard[@]} -eq 0 ]; then
  stale=$(comm -13 <(echo "$missed") <(echo "$listed") | sed '/^$/d')
  if [ -n "$stale" ]; then
    echo "listed in tests/mutants/missed.md but now caught (remove them from the list):"
    echo "$stale" | sed 's/^/  /'
    status=1
  fi
fi
tested=$(cat mutants.out/caught.txt mutants.out/missed.txt mutants.out/timeout.txt mutants.out/unviable.txt | wc -l)
echo "mutation testing: $tested mutants, $(wc -l < mutants.out/caught.txt) caught, $(wc -l < mutants.out/timeout.txt) timed out (caught), $(wc -l < mutants.out/unviable.txt) unviable, $(echo "$missed" | sed '/^$/d' | wc -l) missed (all listed: $([ -z "$unlisted" ] && echo yes || echo no))"
exit $status
