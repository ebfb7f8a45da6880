"""The admission ledger's Redis state and the Lua scripts that change it atomically.

Keys, all under one prefix wrapped in a hash tag (``{prefix}:...``) so that a
Redis Cluster keeps them in one slot, as a script needs::

    {p}:permits   sorted set  member -> lease expiry (ms, Redis' clock)
    {p}:line      sorted set  member -> ticket (arrival order across workers)
    {p}:line_exp  sorted set  member -> place expiry (ms)
    {p}:ticket    counter     the global ticket (INCR)
    {p}:workers   sorted set  worker -> registration expiry (ms)

A member is ``<worker id>/<request id>``: request ids are unique per worker
only. Every script reads the time from Redis (``TIME``), so workers' clocks
never disagree, and purges expired leases and places first: a dead worker's
permits and places are gone within one lease, with nobody sweeping. (Writing
after ``TIME`` needs scripts replicated by their effects: the default from
Redis 5, the only mode from Redis 7; the tests run Redis 7.)

This module holds data only (no I/O); ``redis_ledger`` registers the scripts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = ["ARRIVE", "HEARTBEAT", "LEAVE", "RETRY", "LedgerKeys"]


#: Each key's name after the namespace's hash tag.
_KEY_NAMES: Final = {
    "permits": "permits",
    "line": "line",
    "line_expiry": "line_exp",
    "ticket": "ticket",
    "workers": "workers",
    "freed_channel": "freed",
}


@dataclass(frozen=True, slots=True)
class LedgerKeys:
    """The Redis keys of one ledger namespace (module doc)."""

    prefix: str
    permits: str = field(init=False)
    line: str = field(init=False)
    line_expiry: str = field(init=False)
    ticket: str = field(init=False)
    workers: str = field(init=False)
    #: Where a release is announced (a hint only: waiters poll as well).
    freed_channel: str = field(init=False)

    def __post_init__(self) -> None:
        # One hash tag for the namespace: its keys share one Redis Cluster slot,
        # which a script touching several of them needs.
        for attribute, name in _KEY_NAMES.items():
            object.__setattr__(self, attribute, f"{{{self.prefix}}}:{name}")

    def for_scripts(self) -> list[str]:
        """KEYS of every script, in this order."""
        return [self.permits, self.line, self.line_expiry, self.ticket, self.workers]


# Shared by every script: the time and the purge of what has expired. Purging is
# bounded per call (1000 entries) so one script never blocks Redis for long.
_PRELUDE: Final = """
local permits, line, line_exp, ticket, workers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', permits, '-inf', now)
local dead = redis.call('ZRANGEBYSCORE', line_exp, '-inf', now, 'LIMIT', 0, 1000)
if #dead > 0 then
  redis.call('ZREM', line, unpack(dead))
  redis.call('ZREM', line_exp, unpack(dead))
end
local function enqueue(member, lease)
  redis.call('ZADD', line, redis.call('INCR', ticket), member)
  redis.call('ZADD', line_exp, now + lease, member)
end
local function admit(member, lease)
  redis.call('ZREM', line, member)
  redis.call('ZREM', line_exp, member)
  redis.call('ZADD', permits, now + lease, member)
end
"""

#: ARGV: member, limit, queue_maxsize, lease_ms.
#: Returns {verdict, in_use, waiting}: 1 admitted, 0 in line, -1 refused (line full).
ARRIVE: Final = (
    _PRELUDE
    + """
local member, limit = ARGV[1], tonumber(ARGV[2])
local queue_max, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local in_use, waiting = redis.call('ZCARD', permits), redis.call('ZCARD', line)
if redis.call('ZSCORE', permits, member) then
  return {1, in_use, waiting}
end
if redis.call('ZSCORE', line, member) then
  return {0, in_use, waiting}
end
if in_use < limit and waiting == 0 then
  admit(member, lease)
  return {1, in_use + 1, waiting}
end
if waiting >= queue_max then
  return {-1, in_use, waiting}
end
enqueue(member, lease)
return {0, in_use, waiting + 1}
"""
)

#: ARGV: member, limit, lease_ms. A waiter whose place is ahead of every other
#: waiter but the ones free permits already cover becomes a permit. A place that
#: is gone (Redis restarted, or it expired while this worker could not renew it)
#: is taken again at the end of the line: the request is still waiting here.
#: Returns {admitted (1/0), in_use, waiting}.
RETRY: Final = (
    _PRELUDE
    + """
local member, limit, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('ZSCORE', permits, member) then
  return {1, redis.call('ZCARD', permits), redis.call('ZCARD', line)}
end
local rank = redis.call('ZRANK', line, member)
if not rank then
  enqueue(member, lease)
  rank = redis.call('ZRANK', line, member)
end
local in_use = redis.call('ZCARD', permits)
if rank < limit - in_use then
  admit(member, lease)
  return {1, in_use + 1, redis.call('ZCARD', line)}
end
return {0, in_use, redis.call('ZCARD', line)}
"""
)

#: ARGV: member, freed_channel. Idempotent. Returns {1} when a permit was freed
#: (and announced on the channel), else {0}.
LEAVE: Final = (
    _PRELUDE
    + """
redis.call('ZREM', line, ARGV[1])
redis.call('ZREM', line_exp, ARGV[1])
if redis.call('ZREM', permits, ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], '1')
  return {1}
end
return {0}
"""
)

#: ARGV: worker, worker_ttl_ms, lease_ms, permit_count, then the permits this
#: worker holds, then its places. Renews (or takes again, after a Redis restart:
#: nothing admitted is dropped) every permit and place, and registers the worker.
#: Returns {in_use, waiting, live_workers}.
HEARTBEAT: Final = (
    _PRELUDE
    + """
local worker, ttl, lease, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', workers, '-inf', now)
redis.call('ZADD', workers, now + ttl, worker)
for i = 5, 4 + count do
  redis.call('ZADD', permits, now + lease, ARGV[i])
end
for i = 5 + count, #ARGV do
  if redis.call('ZSCORE', line, ARGV[i]) then
    redis.call('ZADD', line_exp, now + lease, ARGV[i])
  elseif not redis.call('ZSCORE', permits, ARGV[i]) then
    -- (a retry in flight may just have made it a permit: never both)
    enqueue(ARGV[i], lease)
  end
end
return {redis.call('ZCARD', permits), redis.call('ZCARD', line), redis.call('ZCARD', workers)}
"""
)
