"""What several workers share through Redis: the global admission ledger (trio).

Imports only ``adapters.store.redis_link`` from the other adapter worlds: the
one client-in-threads wrapper for Redis (see ``redis_ledger``).
"""
