"""OpenRouter over HTTP: the transport and its connection pools (trio)."""
