#!/usr/bin/env bash
# Runs random fault schedules in the cluster simulation for as long as asked
# and prints every failing seed (with its schedule and what it broke).
#   scripts/sim.sh [SECONDS]   (default 600)
# Replay one seed: SIM_FIRST_SEED=N SIM_SEEDS=1 SIM_LOG=trace \
#   cargo test --test simulation every -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
if ! [[ $seconds =~ ^[0-9]+$ ]]; then
  echo "sim: SECONDS must be a whole number, not '$seconds'" >&2
  exit 2
fi
cargo build --quiet --tests
end=$((SECONDS + seconds))
failed=()
ran=0
while ((SECONDS < end)); do
  first=$(( (RANDOM << 15 | RANDOM) * 1000 ))
  if out=$(SIM_FIRST_SEED=$first SIM_SEEDS=100 cargo test --quiet --test simulation every -- --nocapture 2>&1); then
    :
  else
    echo "$out" | grep -E '^seed|^  ' || true
    failed+=($(echo "$out" | sed -n 's/.*failing seeds: \[\(.*\)\]/\1/p' | tr -d ','))
  fi
  ran=$((ran + 100))
  echo "sim: $ran schedules so far, failing seeds: ${failed[*]:-none}"
done
if ((${#failed[@]})); then
  exit 1
fi
