#!/usr/bin/env bash
# Runs the fuzz targets of tests/fuzz (cargo fuzz: libFuzzer with
# AddressSanitizer) one after another, each for SECONDS, and prints for each
# how many inputs it ran and whether it crashed.
#   scripts/fuzz.sh [SECONDS] [TARGET...]   (default 60 s each; every target)
# Targets: frame_scan, request_decode, membership_merge (see tests/fuzz).
# Installs cargo-fuzz if it is missing. cargo fuzz needs a nightly rustc; on
# stable, RUSTC_BOOTSTRAP=1 lets it pass nightly flags (set here).
# FUZZ_SANITIZER=none builds without AddressSanitizer (faster, but then
# libFuzzer cannot enforce -malloc_limit_mb; only -rss_limit_mb holds).
#
# The seeds in tests/fuzz/corpus/TARGET are read, never written; inputs a run
# finds go to tests/fuzz/target/corpus/TARGET (not committed) and are reused
# by the next run. A crash is kept in tests/fuzz/artifacts/TARGET/; replay it:
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz TARGET FILE
# Logs: tests/fuzz/target/logs/TARGET.log.
# Exit code 0 if nothing crashed, 1 if a target crashed, 2 for a usage or
# build error.
set -euo pipefail
cd "$(dirname "$0")/.."
all=(frame_scan request_decode membership_merge)
seconds=${1:-60}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
  echo "fuzz: SECONDS must be a whole number above 0, not '$seconds'" >&2
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (targets: ${all[*]})" >&2
  exit 2
fi
shift $(($# > 0 ? 1 : 0))
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")
for target in "${targets[@]}"; do
  if ! [[ " ${all[*]} " == *" $target "* ]]; then
    echo "fuzz: no target '$target'; the targets are: ${all[*]}" >&2
    exit 2
  fi
done
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1 && ! [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz ]]; then
  echo "fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  if ! cargo install cargo-fuzz --locked; then
    echo "fuzz: could not install cargo-fuzz; install it by hand and run again" >&2
    exit 2
  fi
fi

fuzz=(cargo fuzz run --fuzz-dir tests/fuzz --sanitizer "$sanitizer")
echo "fuzz: building the targets (sanitizer: $sanitizer)"
if ! cargo fuzz build --fuzz-dir tests/fuzz --sanitizer "$sanitizer"; then
  echo "fuzz: the fuzz targets did not build (see above); 'cargo build' of the crate itself is unaffected" >&2
  exit 2
fi

mkdir -p tests/fuzz/target/logs
summary=()
crashed=0
for target in "${targets[@]}"; do
  grown=tests/fuzz/target/corpus/$target
  log=tests/fuzz/target/logs/$target.log
  mkdir -p "$grown" "tests/fuzz/corpus/$target" "tests/fuzz/artifacts/$target"
  echo "fuzz: $target for $seconds s (log: $log)"
  status=0
  "${fuzz[@]}" "$target" "$grown" "tests/fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  if ((status == 0)); then
    summary+=("$target: ${runs:-?} executions in $seconds s, no crash")
  else
    crashed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    why=$(grep -m 1 -E '^==[0-9]+==|panicked at|^SUMMARY|ERROR: libFuzzer' "$log" || true)
    if [[ -n $artifact ]]; then
      summary+=("$target: CRASH after ${runs:-?} executions: $why; input: $artifact")
    else
      summary+=("$target: FAILED (exit $status) without an input to replay; see $log")
      tail -n 20 "$log" >&2
    fi
  fi
  echo "fuzz: ${summary[-1]}"
done

echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
exit "$crashed"
