"""orpipe's adapters: the outside world (HTTP, and later Open WebUI, SQL, Redis).

Each module says which of its functions are trio- and which asyncio-flavoured.
"""

from adapters.openrouter_http import OpenRouterHttpTransport

__all__ = ["OpenRouterHttpTransport"]
