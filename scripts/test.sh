#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, property and integration
# tests (real nodes on ephemeral ports) and the Python client test.
# Installs the Python test client (thriftpy2) first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import thriftpy2" 2>/dev/null; then
  echo "test: installing the Python test client (tests/python/requirements.txt)"
  python3 -m pip install --quiet -r tests/python/requirements.txt
fi
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --quiet
