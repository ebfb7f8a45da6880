"""The door between Open WebUI's asyncio loop and the trio engine: the only code on both."""
