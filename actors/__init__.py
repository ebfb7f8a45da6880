"""orpipe's actors: one module per actor, its synchronous core beside it.

``actors.open_engine(config, ports)`` runs an engine with the streaming
graph; it is the entry point for the bench, the adapters and the tests.
"""

from orpipe.actors.graph import open_engine, streaming_graph

__all__ = ["open_engine", "streaming_graph"]
