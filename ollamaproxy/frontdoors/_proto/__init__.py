"""Generated from proto/ollamaproxy.proto by scripts/gen-proto.sh; do not edit."""
