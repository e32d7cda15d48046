"""The OpenAI-compatible API under /v1/: agents as models, runs as chat completions and responses
(docs/openai-compatible.md). An adapter over the run engine: no execution path of its own."""
