#!/usr/bin/env bash
# Regenerates src/wire/idl/{locator,diststore}.rs from the IDL in thrift/.
# Needs the Thrift 0.17 compiler (Debian: apt-get install thrift-compiler).
# The output is committed, so a plain `cargo build` needs no compiler; never edit
# the generated files by hand: change the IDL and run this script.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v thrift >/dev/null; then
  echo "gen-thrift: the thrift compiler is missing; install it with: apt-get install thrift-compiler" >&2
  exit 1
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for idl in locator diststore; do
  thrift -I thrift -out "$out" --gen rs "thrift/$idl.thrift"
done
# The 0.17 compiler assumes each IDL file is a module at the crate root
# (`use crate::locator::locator;`); ours live side by side under src/wire/idl/.
sed -i 's/^use crate::locator::locator;$/use super::locator;/' "$out/diststore.rs"
for idl in locator diststore; do
  cp "$out/$idl.rs" "src/wire/idl/$idl.rs"
done
echo "gen-thrift: wrote src/wire/idl/locator.rs and src/wire/idl/diststore.rs ($(thrift --version))"
