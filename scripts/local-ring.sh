#!/usr/bin/env bash
# Starts a local ring you can talk to: installs the commands (location, storeput,
# storeget, storedel, storelist, storeprimer, storetest, storestat, storemerge) with
# `cargo install`, then runs a 3-node ring
# on ports 9900-9902 in the background.
#
#   scripts/local-ring.sh          start (or say it is already running)
#   scripts/local-ring.sh 5        start 5 nodes (9900-9904)
#   scripts/local-ring.sh stop     SIGINT every node: each hands its keys over, then exits
set -euo pipefail
cd "$(dirname "$0")/.."
state="${TMPDIR:-/tmp}/thrifty-ring"
mkdir -p "$state"

if [ "${1:-}" = "stop" ]; then
  if [ ! -s "$state/pids" ]; then echo "local-ring: no ring started by this script is running"; exit 0; fi
  # Stop the joiners first and the seed last, so every handoff has somewhere to go.
  tac "$state/pids" | while read -r pid; do
    kill -INT "$pid" 2>/dev/null || continue
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  : > "$state/pids"
  # The nodes keep data in memory: once the last one is gone, so is the data.
  echo "local-ring: stopped; the ring kept its data in memory, so its keys are gone (start nodes with --data-dir to keep them)"
  exit 0
fi

count="${1:-3}"
case "$count" in ''|*[!0-9]*) echo "local-ring: expected a node count or 'stop', got '$count'" >&2; exit 2;; esac
if [ -s "$state/pids" ] && kill -0 "$(head -1 "$state/pids")" 2>/dev/null; then
  echo "local-ring: already running (pids $(tr '\n' ' ' < "$state/pids")); stop it with: scripts/local-ring.sh stop"
  exit 0
fi

# cargo install puts the commands in $CARGO_INSTALL_ROOT/bin, else
# $CARGO_HOME/bin (default ~/.cargo/bin): use them from there, not from PATH.
root="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}"
bin="$root/bin"
echo "local-ring: installing the commands into $bin ..."
cargo install --quiet --path . --locked --force --root "$root"
case ":$PATH:" in
  *":$bin:"*) ;;
  *) echo "local-ring: note: $bin is not on PATH; to type storeput and storeget: export PATH=\"$bin:\$PATH\"" ;;
esac
: > "$state/pids"
for i in $(seq 0 $((count - 1))); do
  port=$((9900 + i))
  if [ "$i" -eq 0 ]; then args=("$port"); else args=("localhost:9900" "$port"); fi
  log="$state/node-$port.log"
  "$bin/location" "${args[@]}" > "$state/node-$port.out" 2> "$log" &
  echo $! >> "$state/pids"
  # Wait (bounded) for the node to say it listens before starting the next.
  for _ in $(seq 100); do
    grep -q "listening on" "$state/node-$port.out" 2>/dev/null && break
    kill -0 "$!" 2>/dev/null || { echo "local-ring: node on port $port failed:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "local-ring: node on port $port (pid $!, log $log)"
done
cat <<MSG
local-ring: ring of $count nodes on ports 9900-$((9900 + count - 1)). Try:
  storeput a apple
  storeget a
  storelist
  storeprimer && storetest
  location localhost:9900 $((9900 + count))     # another node joins (Ctrl-C: it hands its keys over and leaves)
Stop the ring with: scripts/local-ring.sh stop
MSG
