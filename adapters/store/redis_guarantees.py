"""What a Redis server guarantees about a write, and the commands that make it explicit.

This module owns the detection half of the write-behind's durability
(``redis_durability`` owns what is done about it): ``read_facts`` asks the
server about itself, ``choose_mode`` turns the answer into a
``DurabilityMode``, and ``exec_then_waitaof`` queues a transaction and asks
``WAITAOF`` on the one connection that sent it. How Redis answers each of
these is in ``docs/redis-notes.md`` ("Detecting what the server guarantees").

Plain and synchronous: the functions taking a client block, and are run in
``RedisLink.call``'s worker threads; nothing here is cancelled halfway.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import redis
from redis.typing import EncodableT

from orpipe.adapters.store.redis_layout import text

__all__ = [
    "DurabilityMode",
    "ServerFacts",
    "choose_mode",
    "exec_then",
    "exec_then_waitaof",
    "read_facts",
]

#: ``redis_fsync``: Redis' own fsync suffices; ``waitaof``: each queued chunk waits
#: for ``WAITAOF``; ``writer_holds``: the writer keeps each row until SQL has it.
DurabilityMode = Literal["redis_fsync", "waitaof", "writer_holds"]

#: The first release with ``WAITAOF``.
_WAITAOF_SINCE: Final = (7, 2)
_VERSION: Final = re.compile(r"(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What the server said about itself; None where it would not say."""

    version: tuple[int, int] | None
    run_id: str | None
    aof_enabled: bool | None
    #: ``always``, ``everysec``, ``no``; None when ``CONFIG`` is refused.
    appendfsync: str | None


def choose_mode(facts: ServerFacts) -> DurabilityMode:
    """The mode these facts allow (``redis_durability``'s module doc says what each
    means); anything unknown means ``writer_holds``, the one that needs nothing of Redis."""
    if facts.aof_enabled and facts.appendfsync == "always":
        return "redis_fsync"
    if facts.aof_enabled and facts.version is not None and facts.version >= _WAITAOF_SINCE:
        return "waitaof"
    return "writer_holds"


def read_facts(client: redis.Redis) -> ServerFacts:
    """``INFO server``, ``INFO persistence`` and ``CONFIG GET appendfsync`` in one round
    trip (blocking): the keeper asks every second."""
    pipe = client.pipeline(transaction=False)
    pipe.info("server")
    pipe.info("persistence")
    pipe.config_get("appendfsync")
    server, persistence, config = pipe.execute(raise_on_error=False)
    for reply in (server, persistence):
        if isinstance(reply, Exception):
            raise reply
    if isinstance(config, redis.ResponseError):
        config = {}  # CONFIG disabled or renamed (managed Redis): the policy is unknown
    elif isinstance(config, Exception):
        raise config
    policy = config.get("appendfsync")
    match = _VERSION.match(text(server.get("redis_version", "")))
    aof = persistence.get("aof_enabled")
    return ServerFacts(
        version=(int(match[1]), int(match[2])) if match else None,
        run_id=text(server["run_id"]) if "run_id" in server else None,
        aof_enabled=None if aof is None else text(aof) == "1",
        appendfsync=None if policy is None else text(policy),
    )


def exec_then_waitaof(
    client: redis.Redis, commands: Sequence[tuple[EncodableT, ...]], timeout_ms: int
) -> tuple[list[object], bool]:
    """``MULTI`` + commands + ``EXEC``, then ``WAITAOF 1 0 timeout_ms``, on ONE connection.

    ``WAITAOF`` waits for the writes of its own connection, and a redis-py
    pipeline hands its connection back to the pool after ``EXEC``: so the
    commands are sent by hand on a connection held for both. Returns EXEC's
    replies and whether the local AOF has them fsynced. Blocking.
    """
    return exec_then(client, commands, ("WAITAOF", 1, 0, timeout_ms), lambda r: _first(r) >= 1)


def exec_then(
    client: redis.Redis,
    commands: Sequence[tuple[EncodableT, ...]],
    then: tuple[EncodableT, ...],
    confirmed: Callable[[object], bool],
) -> tuple[list[object], bool]:
    """``exec_then_waitaof`` with any trailing command (tests use ``WAIT`` on Redis < 7.2)."""
    pool = client.connection_pool
    conn = pool.get_connection()
    # redis-py's connection methods carry no annotations (hence the ignores).
    packed = conn.pack_commands([("MULTI",), *commands, ("EXEC",), then])  # type: ignore[no-untyped-call]
    try:
        conn.send_packed_command(packed)  # type: ignore[no-untyped-call]
        replies = [conn.read_response() for _ in range(len(commands) + 3)]
    except BaseException:
        conn.disconnect()  # type: ignore[no-untyped-call]  # no half-read reply for the next user
        raise
    finally:
        pool.release(conn)
    executed = replies[-2]
    if not isinstance(executed, list):
        raise redis.ResponseError(f"the transaction was not applied ({executed!r})")
    failed = next((r for r in executed if isinstance(r, redis.ResponseError)), None)
    if failed is not None:
        raise failed
    return executed, confirmed(replies[-1])


def _first(reply: object) -> int:
    return int(reply[0]) if isinstance(reply, list) and reply else 0
