"""Reserve-then-work quotas: one atomic Lua script takes ``amount`` from a counter only if it stays within
``limit``, before the work starts; the caller gives it back if the work fails.

Checking before the work and counting after it lets N parallel requests all pass the check (18 pictures
against a quota of 10); a reservation cannot be raced: Redis runs the script alone, so 100 parallel
reservations against 10 grant exactly 10.

    reserver = Reserver(client)
    spec = QuotaSpec(key, limit=10, ttl_seconds=86_400)            # generic: any key, limit and window
    async with reserver.hold([user_spec, workspace_spec]) as held:  # all or nothing
        if not held.granted: ... held.refused tells which one and when it resets
        ... do the work; an exception gives everything back, success keeps it

Windows are aligned to the epoch by default (a day ends at 00:00 UTC, as the other quotas in
core/safety/limits.py); ``aligned=False`` starts the window at the first reservation. The counter keys are
plain integers, so a ``limits.LimitStore.quota`` check reads the same key (``/safety status``).
Several specs are reserved one by one (their keys may live on different Cluster nodes) and released
together if any is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from core.errors import StoreError

RESERVE = """
local limit, amount, window, aligned = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  if aligned == '1' then ttl = (math.floor(now_ms / window) + 1) * window - now_ms else ttl = window end
end
if used + amount > limit then return {0, used, ttl} end
used = redis.call('INCRBY', KEYS[1], amount)
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return {1, used, ttl}
"""
"""KEYS: the counter. ARGV: limit, amount, window (ms), aligned ('1': windows end on multiples of the
window since the epoch). Returns {granted 0/1, used after, ms until the window resets}."""

RELEASE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used <= 0 then return 0 end
local left = redis.call('DECRBY', KEYS[1], math.min(used, tonumber(ARGV[1])))
if left <= 0 then redis.call('DEL', KEYS[1]) end
return left
"""
"""KEYS: the counter. ARGV: amount. Gives back at most what is counted (never below zero, never creates a
key: a window that reset meanwhile stays reset). Returns what is left."""

_SHAS = {body: hashlib.sha1(body.encode()).hexdigest() for body in (RESERVE, RELEASE)}  # noqa: S324 - script id


@dataclass(frozen=True, slots=True)
class QuotaSpec:
    """One quota: ``key`` may hold at most ``limit`` within a window of ``ttl_seconds``."""

    key: str
    limit: int
    ttl_seconds: int
    amount: int = 1
    aligned: bool = True
    label: str = ""  # the caller's name for it (e.g. "image-user"), handed back on refusal


@dataclass(frozen=True, slots=True)
class Reservation:
    spec: QuotaSpec
    granted: bool
    used: int  # after this reservation (granted) or as found (refused)
    retry_ms: int  # until the window resets


@dataclass(slots=True)
class Held:
    """What :meth:`Reserver.hold` got: all specs granted, or the first refusal (nothing is kept then)."""

    taken: list[Reservation] = field(default_factory=list)
    refused: Reservation | None = None

    @property
    def granted(self) -> bool:
        return self.refused is None


class Reserver:
    """The reserve / release scripts on a redis-py asyncio client (single node or Cluster)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._r = client

    async def _eval(self, body: str, key: str, *args: Any) -> Any:
        try:
            try:
                return await self._r.evalsha(_SHAS[body], 1, key, *args)
            except NoScriptError:  # a restarted Redis: send the body once, it is cached from then on
                return await self._r.eval(body, 1, key, *args)
        except RedisError as exc:
            raise StoreError(f"quota: {type(exc).__name__}: {exc}") from exc

    async def reserve(self, spec: QuotaSpec) -> Reservation:
        """Take ``spec.amount`` if the counter stays within ``spec.limit``; atomic."""
        if spec.limit <= 0 or spec.ttl_seconds <= 0:
            raise ValueError("a quota needs a positive limit and window")
        raw = await self._eval(
            RESERVE, spec.key, spec.limit, spec.amount, spec.ttl_seconds * 1000, "1" if spec.aligned else "0"
        )
        return Reservation(spec, bool(int(raw[0])), int(raw[1]), int(raw[2]))

    async def release(self, reservation: Reservation) -> None:
        """Give back a granted reservation (the work failed)."""
        if reservation.granted:
            await self._eval(RELEASE, reservation.spec.key, reservation.spec.amount)

    async def reserve_all(self, specs: Sequence[QuotaSpec]) -> Held:
        """All of ``specs`` or none: the first refusal releases what was taken before it."""
        held = Held()
        for spec in specs:
            got = await self.reserve(spec)
            if not got.granted:
                await self.release_all(held.taken)
                return Held([], got)
            held.taken.append(got)
        return held

    async def release_all(self, taken: Sequence[Reservation]) -> None:
        for reservation in reversed(taken):
            await self.release(reservation)

    @asynccontextmanager
    async def hold(self, specs: Sequence[QuotaSpec]) -> AsyncIterator[Held]:
        """Reserve ``specs`` for the block; an exception (or cancellation) in it gives them back.
        The block may also give them back itself (``release_all(held.taken)``) for a failure it handles."""
        held = await self.reserve_all(specs)
        try:
            yield held
        except BaseException:
            await self.release_all(held.taken)
            raise
