"""The admission ledger's Redis state and the Lua scripts that change it atomically.

Keys, all under one prefix wrapped in a hash tag (``{prefix}:...``) so that a
Redis Cluster keeps them in one slot, as a script needs::

    {p}:permits   sorted set  member -> lease expiry (ms, Redis' clock)
    {p}:line      sorted set  member -> ticket (arrival order across workers)
    {p}:line_exp  sorted set  member -> place expiry (ms)
    {p}:ticket    counter     the global ticket (INCR)
    {p}:workers   sorted set  worker -> registration expiry (ms)
    {p}:state     hash        epoch (ms when this state was created), hold (ms)

A member is ``<worker id>/<request id>``: request ids are unique per worker
only. Every script reads the time from Redis (``TIME``), so workers' clocks
never disagree, and purges expired leases and places first: a dead worker's
permits and places are gone within one lease, with nobody sweeping. (Writing
after ``TIME`` needs scripts replicated by their effects: the default from
Redis 5, the only mode from Redis 7; the tests run Redis 7.)

**Lost state.** Redis restarted without persistence, ``FLUSHDB``/``FLUSHALL``
or an eviction under an ``allkeys-*`` policy empties the permits while the
requests they stood for are still streaming; their workers only register them
again at their next heartbeat. Every call carries the epoch its worker last saw
(0 for none yet). When ``{p}:state`` is missing and the caller knew an epoch,
or the caller knew another epoch than the current one, the state was lost: a
new epoch starts and a *hold* of one lease (measured with ``TIME``) during
which ``ARRIVE`` and ``RETRY`` grant nothing (arrivals take a place in line,
nobody is refused for it) while ``HEARTBEAT`` always takes back what its worker
holds. Every live worker renews every lease / 3, so all of them are registered
again before the hold ends. A worker coming back from its local share starts a
hold as well when its first heartbeat finds some of its permits gone (they
expired while it was cut off: others may have been admitted in their place,
and other workers may still be on their own shares). Not covered: a worker whose first call ever
meets the empty state (it cannot tell a first start from a loss), and eviction
of the permits alone while ``{p}:state`` survives; run Redis with
``maxmemory-policy noeviction`` (or a ``volatile-*`` one: these keys have no TTL).

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
    "state": "state",
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
    #: The epoch of this state and the hold after a loss (module doc).
    state: str = field(init=False)
    #: Where a release is announced (a hint only: waiters poll as well).
    freed_channel: str = field(init=False)

    def __post_init__(self) -> None:
        # One hash tag for the namespace: its keys share one Redis Cluster slot,
        # which a script touching several of them needs.
        for attribute, name in _KEY_NAMES.items():
            object.__setattr__(self, attribute, f"{{{self.prefix}}}:{name}")

    def for_scripts(self) -> list[str]:
        """KEYS of every script, in this order."""
        return [self.permits, self.line, self.line_expiry, self.ticket, self.workers, self.state]


# Shared by every script: the time, the epoch and the hold (module doc), and the
# purge of what has expired. Purging is bounded per call (1000 entries) so one
# script never blocks Redis for long. The first three ARGV of every call are
# the prelude's (known epoch, hold length in ms, 1 when the worker comes back
# from its local share): they are taken off ARGV here, so each script's own
# ARGV start at 1.
_PRELUDE: Final = """
local permits, line, line_exp, ticket, workers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local state = KEYS[6]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = tonumber(table.remove(ARGV, 1))
local hold_ms = tonumber(table.remove(ARGV, 1))
local returning = table.remove(ARGV, 1) == '1'
local hold_until = tonumber(redis.call('HGET', state, 'hold') or '0')
local function start_hold()
  if hold_until < now + hold_ms then
    hold_until = now + hold_ms
    redis.call('HSET', state, 'hold', hold_until)
  end
end
local epoch = tonumber(redis.call('HGET', state, 'epoch'))
if not epoch then
  epoch = now
  redis.call('HSET', state, 'epoch', epoch)
  -- a first start when nobody knew an epoch; otherwise the state was lost
  if known > 0 then start_hold() end
elseif known > 0 and known ~= epoch then
  start_hold()
end
local function holding()
  return hold_until > now
end
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

#: ARGV (after the prelude's): member, limit, queue_maxsize, lease_ms. Returns
#: {verdict, in_use, waiting, epoch}: 1 admitted, 0 in line, -1 refused (line full).
ARRIVE: Final = (
    _PRELUDE
    + """
local member, limit = ARGV[1], tonumber(ARGV[2])
local queue_max, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local in_use, waiting = redis.call('ZCARD', permits), redis.call('ZCARD', line)
if redis.call('ZSCORE', permits, member) then
  return {1, in_use, waiting, epoch}
end
if redis.call('ZSCORE', line, member) then
  return {0, in_use, waiting, epoch}
end
if in_use < limit and waiting == 0 and not holding() then
  admit(member, lease)
  return {1, in_use + 1, waiting, epoch}
end
if waiting >= queue_max then
  return {-1, in_use, waiting, epoch}
end
enqueue(member, lease)
return {0, in_use, waiting + 1, epoch}
"""
)

#: ARGV: member, limit, lease_ms. A waiter whose place is ahead of every other
#: waiter but the ones free permits already cover becomes a permit. A place that
#: is gone (Redis restarted, or it expired while this worker could not renew it)
#: is taken again at the end of the line: the request is still waiting here.
#: Nobody is admitted during a hold. Returns {admitted (1/0), in_use, waiting, epoch}.
RETRY: Final = (
    _PRELUDE
    + """
local member, limit, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('ZSCORE', permits, member) then
  return {1, redis.call('ZCARD', permits), redis.call('ZCARD', line), epoch}
end
local rank = redis.call('ZRANK', line, member)
if not rank then
  enqueue(member, lease)
  rank = redis.call('ZRANK', line, member)
end
local in_use = redis.call('ZCARD', permits)
if rank < limit - in_use and not holding() then
  admit(member, lease)
  return {1, in_use + 1, redis.call('ZCARD', line), epoch}
end
return {0, in_use, redis.call('ZCARD', line), epoch}
"""
)

#: ARGV: member, freed_channel. Idempotent. Returns {1, epoch} when a permit was
#: freed (and announced on the channel), else {0, epoch}.
LEAVE: Final = (
    _PRELUDE
    + """
redis.call('ZREM', line, ARGV[1])
redis.call('ZREM', line_exp, ARGV[1])
if redis.call('ZREM', permits, ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], '1')
  return {1, epoch}
end
return {0, epoch}
"""
)

#: ARGV: worker, worker_ttl_ms, lease_ms, permit_count, then the permits this
#: worker holds, then its places. Renews (or takes again, after a Redis restart:
#: nothing admitted is dropped) every permit and place, and registers the worker.
#: It takes its permits back even during a hold: that is what the hold waits for.
#: Returns {in_use, waiting, live_workers, epoch}.
HEARTBEAT: Final = (
    _PRELUDE
    + """
local worker, ttl, lease, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', workers, '-inf', now)
redis.call('ZADD', workers, now + ttl, worker)
for i = 5, 4 + count do
  if redis.call('ZADD', permits, now + lease, ARGV[i]) == 1 and returning then
    start_hold()  -- (a lease that expired while this worker was cut off)
  end
end
for i = 5 + count, #ARGV do
  if redis.call('ZSCORE', line, ARGV[i]) then
    redis.call('ZADD', line_exp, now + lease, ARGV[i])
  elseif not redis.call('ZSCORE', permits, ARGV[i]) then
    -- (a retry in flight may just have made it a permit: never both)
    enqueue(ARGV[i], lease)
  end
end
local live = redis.call('ZCARD', workers)
return {redis.call('ZCARD', permits), redis.call('ZCARD', line), live, epoch}
"""
)
