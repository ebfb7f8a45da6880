"""Artifact storage (trio): the codec, the SQL table (``sql``, ``sql_backends``), the Redis
write-behind (``redis_writebehind`` with its ``redis_flusher``, ``redis_link`` and
``redis_layout``), and the store assembled from its ``settings``."""
