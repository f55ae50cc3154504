#!/usr/bin/env bash
# Builds in release and runs storebench: thrifty-p2p beside Redis (one
# server beside one node, a 3-master Redis Cluster beside the 3-node ring,
# both driven by storebench's own RESP client; redis-benchmark beside them
# for reference), a loaded 3-node ring's idle CPU, figures against the
# targets of issue 10, results written into BENCHMARKS.md. Installs
# redis-server and redis-tools (redis-cli, redis-benchmark) from Debian
# first when missing.
#
#   scripts/bench.sh             the full run (about twenty minutes on two cores)
#   scripts/bench.sh --quick     a smoke test (1-2 minutes; BENCHMARKS.md untouched)
#   scripts/bench.sh --only idle the idle part alone, printed (add --idle-keys 100000,1000000,10000000
#                                for 10M keys, about 5 GiB)
#   scripts/bench.sh --help      every option (durations, sizes, --only PART, ...)
#
# Run it on an otherwise idle machine: the client, the nodes and Redis share
# the cores, and anything else running skews every figure (the report shows
# how much CPU other processes took during each cell).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null \
  || ! command -v redis-benchmark >/dev/null; then
  echo "bench: installing redis-server and redis-tools (apt-get)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release --quiet --bin location --bin storebench
exec target/release/storebench "$@"
