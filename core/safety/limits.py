"""Abuse and cost limits in Redis: one atomic Lua script per limit, timed by the Redis server's clock.

- **Rate** (per user, per channel): a sliding-window log in a sorted set. The script drops hits older than
  the window, admits when fewer than ``count`` remain and records the hit, else returns the time until the
  oldest hit leaves the window. Exact under any concurrency: 100 simultaneous requests against 10 admit 10.
- **Token quota** (per user, per workspace/guild): a counter that expires at the end of the current window
  (windows are aligned to the epoch, so a day ends at 00:00 UTC). The script adds the turn's reported usage
  (or nothing, to check) and returns the total and the milliseconds until the reset. Checked before a turn,
  counted after it: concurrent turns may overshoot a quota by what they use between the two. (Token use is
  only known afterwards; a quota counted in units known beforehand, such as pictures, is reserved atomically
  with core/safety/reserve.py instead.)
- **Concurrent generations** (per workspace/guild): a sorted set of turn ids scored by lease expiry; a slot
  is freed when the turn ends, or by its lease if the replica died. A turn that finds no free slot waits in
  a fair line (start-time fair queueing over users, first-come among equals) and asks again; it is never
  refused for lack of a slot unless it waited longer than ``max_queue_seconds``.

Keys name users by a one-way hash of ``platform:user`` (see :func:`user_tag`), so no user id appears in
key names and ``/forget`` cannot reset a limit; counters expire by themselves.

Scripts are loaded at start-up and called with EVALSHA inside pipelines (one round trip for all checks of a
turn); NOSCRIPT (a restarted Redis) reloads them and retries once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from core.errors import StoreError
from core.keys import KeySpace
from core.ops.recorder import CommandRecorder

RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  return {1, n + 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, n, math.ceil((tonumber(oldest[2]) + window - now) / 1000)}
"""
"""KEYS: the window's sorted set. ARGV: window (µs), limit, a unique member.
Returns {admitted 0/1, hits in the window, ms until a slot frees (0 when admitted)}."""

QUOTA = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local add = tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if add > 0 then
  used = redis.call('INCRBY', KEYS[1], add)
  if redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIREAT', KEYS[1], (math.floor(now_ms / window) + 1) * window)
  end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = (math.floor(now_ms / window) + 1) * window - now_ms end
return {used, ttl}
"""
"""KEYS: the counter. ARGV: window (ms), tokens to add (0 checks). Returns {used, ms until the reset}."""

ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, lease, me, who = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, turn in ipairs(gone) do
  redis.call('ZREM', KEYS[2], turn)
  redis.call('ZREM', KEYS[3], turn)
end
if redis.call('ZSCORE', KEYS[1], me) then return {1, redis.call('ZCARD', KEYS[1]), 0} end
local clock = tonumber(redis.call('HGET', KEYS[4], '') or '0')
local mine = tonumber(redis.call('ZSCORE', KEYS[2], me))
local start
if mine then
  start = math.floor(mine / 1048576)
else
  start = math.max(clock, tonumber(redis.call('HGET', KEYS[4], who) or '0')) + 1
  redis.call('HSET', KEYS[4], who, start)
  -- ties (the same virtual start) go first-come: the arrival count breaks them
  mine = start * 1048576 + redis.call('HINCRBY', KEYS[4], '#', 1) % 1048576
  redis.call('ZADD', KEYS[2], mine, me)
end
redis.call('PEXPIRE', KEYS[4], 3600000)
local used = redis.call('ZCARD', KEYS[1])
local ahead = redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. mine)
if limit - used > ahead then
  redis.call('ZREM', KEYS[2], me)
  redis.call('ZREM', KEYS[3], me)
  redis.call('ZADD', KEYS[1], now + lease, me)
  redis.call('PEXPIRE', KEYS[1], lease)
  if start > clock then redis.call('HSET', KEYS[4], '', start) end
  return {1, used + 1, 0}
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), me)
redis.call('PEXPIRE', KEYS[2], lease)
redis.call('PEXPIRE', KEYS[3], lease)
return {0, used, ahead + 1}
"""
"""A generation slot, handed out in fair order. KEYS: the slots (turn id -> lease expiry), the waiting line
(turn id -> virtual start x 2^20 + arrival count), the waiters' deadlines (turn id -> when a waiter that
stopped asking leaves the line), the virtual clock (user -> last virtual start; '' -> the clock; '#' -> the
arrival count). ARGV: limit, lease (ms), turn id, user tag, how long a waiter stays in line without asking
again (ms).

Start-time fair queueing: a waiter's virtual start is one past the later of the clock and its user's last
one, so a user with ten turns waiting takes every tenth place, not the first ten; ties go first-come. A turn
gets a slot when fewer turns wait ahead of it than slots are free. Returns {acquired 0/1, slots in use,
place in line (1 = next; 0 when acquired)}."""

SCRIPTS = {"rate": RATE, "quota": QUOTA, "acquire": ACQUIRE}
SHAS = {name: hashlib.sha1(body.encode()).hexdigest() for name, body in SCRIPTS.items()}  # noqa: S324 - Redis's script id


def waiting_keys(slots: str) -> tuple[str, str, str, str]:
    """The slots key and its waiting line, the waiters' deadlines and the virtual clock (one hash slot)."""
    return slots, slots + ":line", slots + ":deadlines", slots + ":clock"


def user_tag(platform: str, user_id: str) -> str:
    """A stable one-way tag for a user in key names (no raw id in keys)."""
    return hashlib.sha256(f"parley-limits:{platform}:{user_id}".encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Window:
    count: int
    seconds: float


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One limit to check in the admission pipeline."""

    kind: str  # "rate" | "quota" | "acquire"
    scope: str  # "user" | "channel" | "workspace"
    key: str
    args: tuple[Any, ...]
    limit: int = 0
    member: str = ""  # what to remove to refund an admitted hit (rate, acquire)


@dataclass(frozen=True, slots=True)
class LimitOutcome:
    check: LimitCheck
    admitted: bool
    retry_ms: int = 0
    used: int = 0
    place: int = 0  # acquire: the turn's place in the waiting line (1 = next), 0 when it got a slot


class LimitStore:
    """The limit scripts on a redis-py asyncio client (which the caller owns)."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace) -> None:
        self._r = client
        self._keys = keys
        self._cluster = isinstance(client, RedisCluster)

    @property
    def cluster(self) -> bool:
        return self._cluster

    @property
    def client(self) -> aioredis.Redis:
        """The client the scripts run on (for :class:`core.safety.reserve.Reserver`)."""
        return self._r

    # ---------------------------------------------------------------------------------------- key names

    def rate_key(self, scope: str, ident: str, window: Window) -> str:
        return self._keys.scoped("limit", "rate", scope, ident, f"{window.count}per{window.seconds:g}s")

    def quota_key(self, scope: str, ident: str, window_seconds: int) -> str:
        return self._keys.scoped("limit", "quota", scope, ident, f"{window_seconds}s")

    def slots_key(self, platform: str, workspace: str) -> str:
        # A hash tag: the slots, the waiting line and the clock are one script's keys (one Cluster slot).
        tag = f"{platform}:{workspace}".replace("{", "_").replace("}", "_")
        return self._keys.scoped("limit", "slots", "{" + tag + "}")

    def notice_key(self, scope: str, ident: str, reason: str) -> str:
        return self._keys.scoped("limit", "notice", scope, ident, reason)

    # ------------------------------------------------------------------------------------------- checks

    def rate(self, scope: str, ident: str, window: Window, member: str) -> LimitCheck:
        key = self.rate_key(scope, ident, window)
        return LimitCheck(
            "rate", scope, key, (int(window.seconds * 1_000_000), window.count, member), window.count, member
        )

    def quota(self, scope: str, ident: str, limit: int, window_seconds: int) -> LimitCheck:
        return LimitCheck(
            "quota", scope, self.quota_key(scope, ident, window_seconds), (window_seconds * 1000, 0), limit
        )

    def acquire(
        self, platform: str, workspace: str, limit: int, lease_ms: int, turn_id: str, who: str, wait_ms: int
    ) -> LimitCheck:
        """A generation slot in fair order (``who``: the user's tag); a turn that gets none waits in line
        and asks again within ``wait_ms`` (else it leaves the line)."""
        key = self.slots_key(platform, workspace)
        return LimitCheck(
            "acquire", "workspace", key, (limit, lease_ms, turn_id, who, wait_ms), limit, turn_id
        )

    async def load(self) -> None:
        try:
            for body in SCRIPTS.values():
                await self._r.script_load(body)
        except RedisError as exc:
            raise StoreError(f"cannot load the limit scripts: {type(exc).__name__}: {exc}") from exc

    async def _run(self, build: Any) -> list[Any]:
        """Run a pipeline built by ``build(pipe)``; NOSCRIPT reloads the scripts and retries once."""
        for attempt in (1, 2):
            try:
                if self._cluster:  # no scripts in a cluster pipeline: one command at a time
                    recorder = CommandRecorder()
                    build(recorder)
                    return await recorder.execute(self._r)
                async with self._r.pipeline(transaction=False) as pipe:
                    build(pipe)
                    return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise StoreError("Redis refused the limit scripts") from None
                await self.load()
        raise AssertionError("unreachable")

    @staticmethod
    def _queue(pipe: Pipeline, check: LimitCheck) -> None:
        if check.kind == "acquire":
            pipe.evalsha(SHAS["acquire"], 4, *waiting_keys(check.key), *check.args)
        else:
            pipe.evalsha(SHAS[check.kind], 1, check.key, *check.args)

    async def run(
        self, checks: Sequence[LimitCheck], *extra: tuple[str, tuple[Any, ...]]
    ) -> tuple[list[LimitOutcome], list[Any]]:
        """Run checks (and extra plain commands, queued first) in one round trip."""
        try:
            results = await self._run(lambda pipe: self.queue_checks(pipe, checks, *extra))
        except RedisError as exc:
            raise StoreError(f"limits: {type(exc).__name__}: {exc}") from exc
        return self.parse(checks, len(extra), results)

    @classmethod
    def queue_checks(
        cls, pipe: Any, checks: Sequence[LimitCheck], *extra: tuple[str, tuple[Any, ...]]
    ) -> None:
        """Queue what :meth:`run` sends on someone else's pipeline (the turn's first read)."""
        for name, args in extra:
            getattr(pipe, name)(*args)
        for check in checks:
            cls._queue(pipe, check)

    @staticmethod
    def parse(
        checks: Sequence[LimitCheck], n_extra: int, results: Sequence[Any]
    ) -> tuple[list[LimitOutcome], list[Any]]:
        plain, scripted = list(results[:n_extra]), results[n_extra:]
        outcomes = []
        for check, raw in zip(checks, scripted, strict=True):
            if check.kind == "quota":
                used, ttl = int(raw[0]), int(raw[1])
                outcomes.append(
                    LimitOutcome(check, used < check.limit, ttl if used >= check.limit else 0, used)
                )
            elif check.kind == "acquire":
                outcomes.append(LimitOutcome(check, bool(raw[0]), used=int(raw[1]), place=int(raw[2])))
            else:
                outcomes.append(LimitOutcome(check, bool(raw[0]), int(raw[2]), int(raw[1])))
        return outcomes, plain

    async def poll(self, check: LimitCheck) -> LimitOutcome:
        """Ask again for what ``check`` asks (a waiting turn's generation slot): one round trip."""
        outcomes, _ = await self.run([check])
        return outcomes[0]

    async def refund(self, outcomes: Sequence[LimitOutcome], notice: tuple[str, int] | None = None) -> bool:
        """Give back what admitted checks took (another limit refused the turn). With ``notice=(key, ms)``,
        also claim the once-per-window notice: True when this refusal should be shown."""

        def build(pipe: Pipeline) -> None:
            for o in outcomes:
                if o.check.kind == "acquire":  # held, or still waiting in line
                    slots, line, deadlines, _ = waiting_keys(o.check.key)
                    for key in (slots, line, deadlines):
                        pipe.zrem(key, o.check.member)
                elif o.admitted and o.check.member:
                    pipe.zrem(o.check.key, o.check.member)
            if notice is not None:
                pipe.set(notice[0], "1", px=max(1, notice[1]), nx=True)

        try:
            results = await self._run(build)
        except RedisError as exc:
            raise StoreError(f"limits: {type(exc).__name__}: {exc}") from exc
        return bool(results[-1]) if notice is not None else False

    async def release(self, slots: Sequence[tuple[str, str]]) -> None:
        """Free generation slots: ``(slots key, turn id)`` pairs."""

        def build(pipe: Pipeline) -> None:
            for key, member in slots:
                pipe.zrem(key, member)

        if slots:
            try:
                await self._run(build)
            except RedisError as exc:
                raise StoreError(f"limits: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def queue_usage(
        pipe: Pipeline, quotas: Sequence[LimitCheck], tokens: int, release: tuple[str, str] | None = None
    ) -> None:
        """Queue what :meth:`add_usage` does on someone else's pipeline (the turn's final write)."""
        if tokens > 0:
            for q in quotas:
                pipe.evalsha(SHAS["quota"], 1, q.key, q.args[0], tokens)
        if release is not None:  # a freed generation slot must not wait (core/ops/deferred.py)
            getattr(pipe, "now", pipe).zrem(*release)

    async def add_usage(
        self, quotas: Sequence[LimitCheck], tokens: int, release: tuple[str, str] | None = None
    ) -> list[Any]:
        """Count ``tokens`` into each quota and free a generation slot ``(key, turn id)``: one round trip."""
        try:
            return await self._run(lambda pipe: self.queue_usage(pipe, quotas, tokens, release))
        except RedisError as exc:
            raise StoreError(f"limits: {type(exc).__name__}: {exc}") from exc
