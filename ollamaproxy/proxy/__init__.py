"""The client-facing aiohttp application: Ollama and OpenAI routes, guards, forwarding."""
