#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, property and integration
# tests (real nodes on ephemeral ports), the Python client test, then the
# Python package (python/): built and installed, and its pytest suite run
# against nodes of target/debug/location. Installs the Python test
# requirements first if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import thriftpy2" 2>/dev/null; then
  echo "test: installing the Python test client (tests/python/requirements.txt)"
  python3 -m pip install --quiet -r tests/python/requirements.txt
fi
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --quiet
if ! python3 -c "import maturin, numpy, pytest" 2>/dev/null; then
  echo "test: installing the Python package's test requirements (python/requirements-test.txt)"
  python3 -m pip install --quiet -r python/requirements-test.txt
fi
# The way users install it; maturin from the requirements above, so no
# isolated build environment is downloaded; python/target keeps the build.
python3 -m pip install --quiet --disable-pip-version-check --no-build-isolation ./python
python3 -m pytest -q python/tests
