"""Shard leases: replicas of one bot split a platform's shards (Discord gateway shards) through Redis.

Every replica is a *member* (a sorted set scored by when its membership runs out) and holds *leases* on
shard ids (a hash: shard -> "owner expiry"). Each :meth:`ShardLeases.tick` (every ``heartbeat`` seconds) is
one script that drops members and leases that ran out, renews the caller's, and tops its leases up to its fair
share, ``ceil(shards / live members)``, from the free ones, lowest id first. A replica that dies stops
ticking: after ``lease`` seconds its membership and its shards run out, and the others' next ticks take them
(so a dead replica's shards move within ``lease + heartbeat`` seconds: 20 s by default). A replica never
gives up a live lease by itself: a new replica gets shards as they come free (a restart, a death).

Keys share one ``{hash tag}``, so the script runs on a Redis Cluster too::

    parley:<bot>:{shards-<bot>}:<namespace>:members   zset owner -> membership expiry (ms)
    parley:<bot>:{shards-<bot>}:<namespace>:leases    hash shard id -> "owner expiry_ms"
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.errors import StoreError, StoreUnavailable
from core.keys import KeySpace

# KEYS: members, leases. ARGV: owner, lease ms, shard count, claim (1/0). Returns the owner's shard ids.
_TICK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner, lease, total = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + lease, owner)
redis.call('PEXPIRE', KEYS[1], lease * 4)
local live = redis.call('ZCARD', KEYS[1])
local share = math.ceil(total / live)
local held = {}
local free = {}
for shard = 0, total - 1 do
  local value = redis.call('HGET', KEYS[2], shard)
  local who, expiry = nil, 0
  if value then
    local space = string.find(value, ' ')
    who, expiry = string.sub(value, 1, space - 1), tonumber(string.sub(value, space + 1))
  end
  if who == owner and expiry > now then
    table.insert(held, shard)
  elseif not who or expiry <= now then
    table.insert(free, shard)
  end
end
for _, shard in ipairs(free) do
  if #held >= share or ARGV[4] ~= '1' then break end
  table.insert(held, shard)
end
for _, shard in ipairs(held) do
  redis.call('HSET', KEYS[2], shard, owner .. ' ' .. (now + lease))
end
redis.call('PEXPIRE', KEYS[2], lease * 4)
return held
"""

# KEYS: members, leases. ARGV: owner. Gives back the owner's shards and membership (a clean shutdown).
_LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if string.sub(all[i + 1], 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then redis.call('HDEL', KEYS[2], all[i]) end
end
return 1
"""


class ShardLeases:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        *,
        owner: str,
        namespace: str = "discord",
        lease: float = 15.0,
        heartbeat: float = 5.0,
    ) -> None:
        if heartbeat * 2 > lease:
            raise ValueError("a shard lease must outlast two heartbeats")
        self.owner = owner
        self.lease = lease
        self.heartbeat = heartbeat
        tag = keys.scoped("{shards-" + keys.bot + "}", namespace)
        self._keys = [tag + ":members", tag + ":leases"]
        self._tick = client.register_script(_TICK)
        self._leave = client.register_script(_LEAVE)

    async def tick(self, shards: int, *, claim: bool = True) -> frozenset[int]:
        """Renew this replica's membership and leases, take free shards up to its share (unless ``claim`` is
        false: joining, so that replicas started together see each other first); return its shards."""
        args: list[str | int] = [self.owner, int(self.lease * 1000), shards, int(claim)]
        try:
            held: Any = await self._tick(keys=self._keys, args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"shard leases: {type(exc).__name__}") from exc
        return frozenset(int(s) for s in held)

    async def leave(self) -> None:
        """Give the shards back at once (shutdown), so the others take them on their next tick."""
        try:
            await self._leave(keys=self._keys, args=[self.owner])
        except RedisError as exc:
            raise StoreError(f"shard leases: {type(exc).__name__}") from exc
