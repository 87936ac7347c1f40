"""Pure translation between Ollama's native API and the OpenAI-compatible API (requests, answers, streams)."""
