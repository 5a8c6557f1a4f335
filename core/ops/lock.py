"""A per-conversation lock in Redis with a finite lease, renewed while its holder works.

The lock is advisory (a stalled holder can lose its lease to another replica), so the write that ends a turn
is *fenced*: the holder passes its :class:`~core.memory.Fence` down to the turn's final write, whose
append script checks in the same atomic step that the lease is still ours (:class:`~core.errors.LeaseLost`
otherwise).

The lock key sits in the conversation's hash slot (``parley:<bot>:{<conversation>}:lock``). Its value is
``<kind>:<owner>:<random>``: ``w`` for a queue worker (which drains the conversation's inbox and re-checks it
after unlocking), ``d`` for a direct turn (:meth:`ConversationLocks.hold`, taken by the dispatcher when the
queue is off).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from core.errors import StoreError, StoreUnavailable
from core.keys import KeySpace
from core.memory import Fence
from core.types import Place

log = structlog.get_logger("parley.lock")

WORKER = "w"
DIRECT = "d"

# Returns "" when the lock was taken, else the current holder's value. A lock already holding this token
# was taken by this very call, sent again after its reply was lost (a connection dropped in a failover).
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ''
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _unavailable(exc: RedisError) -> StoreError:
    return StoreUnavailable(f"Redis unreachable: {type(exc).__name__}")


@dataclass
class Lease:
    key: str
    token: str
    conversation: str  # KeySpace.conversation(place)
    lost: bool = False

    @property
    def kind(self) -> str:
        return self.token.split(":", 1)[0]


def lock_key(keys: KeySpace, place: Place) -> str:
    """The conversation's lock, in its hash slot."""
    return keys.conversation(place) + ":lock"


def holder_kind(value: str) -> str:
    return value.split(":", 1)[0] if value else ""


class ConversationLocks:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        *,
        lease: float = 10.0,
        wait: float = 60.0,
        owner: str = "",
        poll: float = 0.02,
        heartbeat: float | None = None,
    ) -> None:
        self._r = client
        self._keys = keys
        self.lease = lease
        # Seconds between renewals: a lease survives one missed heartbeat (a Redis blip), not a dead owner.
        self.heartbeat = heartbeat or min(3.0, lease / 3)
        self.wait = wait
        self.owner = owner or secrets.token_hex(4)
        self._poll = poll
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def key(self, place: Place) -> str:
        return lock_key(self._keys, place)

    @property
    def lease_ms(self) -> int:
        return int(self.lease * 1000)

    def token(self, kind: str) -> str:
        """A fresh lock value: ``<kind>:<owner>:<random>``."""
        return f"{kind}:{self.owner}:{secrets.token_hex(6)}"

    async def try_acquire(self, place: Place, kind: str) -> tuple[Lease | None, str]:
        """Take the lock if it is free: ``(lease, "")``, else ``(None, holder's value)``."""
        key = self.key(place)
        token = self.token(kind)
        try:
            holder = await self._acquire(keys=[key], args=[token, self.lease_ms])
        except RedisError as exc:
            raise _unavailable(exc) from exc
        if holder:
            return None, str(holder)
        return Lease(key, token, self._keys.conversation(place)), ""

    async def acquire(self, place: Place, kind: str, wait: float) -> tuple[Lease | None, str]:
        """Take the lock, polling up to ``wait`` seconds (back-off from 20 ms to 250 ms)."""
        deadline = time.monotonic() + wait
        delay = self._poll
        while True:
            lease, holder = await self.try_acquire(place, kind)
            if lease is not None or time.monotonic() >= deadline:
                return lease, holder
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.25)

    async def renew(self, lease: Lease) -> bool:
        try:
            ok = await self._renew(keys=[lease.key], args=[lease.token, self.lease_ms])
        except RedisError as exc:
            raise _unavailable(exc) from exc
        if not ok:
            lease.lost = True
        return bool(ok)

    async def release(self, lease: Lease) -> None:
        """Give the lock back if it is still ours. Never raises: an unreleased lease simply expires."""
        try:
            await self._release(keys=[lease.key], args=[lease.token])
        except RedisError as exc:
            log.warning("lock_release_failed", error=type(exc).__name__, conversation=lease.conversation)

    @asynccontextmanager
    async def keep(
        self, lease: Lease, tick: Callable[[], Awaitable[object]] | None = None
    ) -> AsyncIterator[Lease]:
        """Renew ``lease`` every heartbeat while the block runs (and call ``tick`` alongside: the queue
        worker refreshes its signal's idle time, so no other worker claims a turn whose owner lives)."""

        async def renew_forever() -> None:
            while True:
                await asyncio.sleep(self.heartbeat)
                try:
                    if not await self.renew(lease):
                        log.warning("lock_lease_lost", conversation=lease.conversation)
                        return
                    if tick is not None:
                        await tick()
                except StoreError as exc:  # a Redis blip: keep trying until the lease runs out
                    log.warning("lock_renew_failed", error=str(exc), conversation=lease.conversation)

        task = asyncio.create_task(renew_forever(), name=f"lease:{lease.conversation}")
        try:
            yield lease
        finally:
            task.cancel()
            await asyncio.wait({task})

    @asynccontextmanager
    async def hold(self, place: Place) -> AsyncIterator[Fence | None]:
        """One direct turn of a conversation at a time across replicas; yields the fence for its final write.

        When Redis is unreachable the turn goes on unlocked (``None``), so the engine can degrade
        (memory_error, or an answer without memory). After ``wait`` seconds without the lock the turn also
        goes on (advisory lock), with a warning.
        """
        try:
            lease, holder = await self.acquire(place, DIRECT, self.wait)
        except StoreError:
            yield None
            return
        if lease is None:
            log.warning(
                "lock_wait_exceeded",
                conversation=self._keys.conversation(place),
                holder_kind=holder_kind(holder),
            )
            yield None
            return
        try:
            async with self.keep(lease):
                yield Fence(lease.conversation, lease.key, lease.token)
        finally:
            await self.release(lease)
