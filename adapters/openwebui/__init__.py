"""Open WebUI's world: the Function's work on Open WebUI's asyncio loop."""
