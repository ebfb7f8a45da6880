"""OpenRouter's world: the streaming transport and its pools (trio), the model catalogue as
data, and the one translator of httpx errors (the last two loop-neutral)."""
