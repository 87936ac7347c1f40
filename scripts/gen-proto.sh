#!/usr/bin/env bash
# Regenerate ollamaproxy/frontdoors/_proto from proto/ollamaproxy.proto (needs grpcio-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT=ollamaproxy/frontdoors/_proto
mkdir -p "$OUT"
rm -f "$OUT"/ollamaproxy_pb2*.py "$OUT"/ollamaproxy_pb2*.pyi
# Mapping the include root onto the package path makes the generated imports package-absolute.
"$PYTHON" -m grpc_tools.protoc -I"$OUT"=proto \
    --python_out=. --pyi_out=. --grpc_python_out=. proto/ollamaproxy.proto
printf '"""Generated from proto/ollamaproxy.proto by scripts/gen-proto.sh; do not edit."""\n' > "$OUT/__init__.py"
