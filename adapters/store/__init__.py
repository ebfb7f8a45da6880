"""Artifact storage: the codec, the SQL table and the Redis write-behind (trio)."""
