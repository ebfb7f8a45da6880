"""orpipe's adapters: the outside world (HTTP, and later Open WebUI, SQL, Redis).

Each module says which of its functions are trio- and which asyncio-flavoured.
"""

from orpipe.adapters.openrouter.transport import OpenRouterHttpTransport

__all__ = ["OpenRouterHttpTransport"]
