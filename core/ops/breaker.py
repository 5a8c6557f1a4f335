"""LLM port wrappers: a circuit breaker, and a metering layer (time to first token, errors by class).

The openai client already retries 429/5xx/connection errors with back-off (``PARLEY_LLM_MAX_RETRIES``); the
breaker sits outside those retries. After ``failures`` consecutive failed calls it *opens*: calls fail at once
with :class:`CircuitOpen`, an :class:`~core.errors.LLMUnavailable` (the engine answers the persona's error
text) instead of making every user wait for timeouts. After ``reset_after`` seconds it is *half-open*: one
trial call goes through; success closes the circuit, failure opens it again.

With a :class:`SharedCircuit` (the runtime always gives one) the state lives in Redis: consecutive failures,
"open until" and the half-open trial's lease are one hash judged by Lua on the server's clock, so replicas
open and close together and only one of them probes. Each breaker keeps a mirror of the last state it saw
(for :attr:`CircuitBreakerLLM.state`, readiness and metrics). A call costs no round trip while the circuit
was seen closed and clean less than ``fresh_for`` seconds ago (so another replica's opening is seen within
that time); a failure, or a success after failures, writes. If Redis fails, it judges alone until Redis
answers again.

Only endpoint failures count (unavailable, timeout, rate limited); a rejected request or a too-long prompt
says nothing about the endpoint's health. A call abandoned by its consumer counts neither way.
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from core.errors import LLMError, LLMRateLimited, LLMTimeout, LLMUnavailable
from core.keys import KeySpace
from core.llm import LLM, LLMDelta, LLMEnd, LLMEvent, LLMRequest
from core.ops.metrics import Metrics
from core.ops.pacing import PacedOut

log = structlog.get_logger("parley.breaker")

COUNTED = (LLMUnavailable, LLMTimeout, LLMRateLimited)


class CircuitState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpen(LLMUnavailable):
    """The breaker refused the call without trying (the endpoint kept failing)."""


# KEYS[1] the circuit's hash: f = consecutive failures, o = open until (ms, 0 = closed), t = trial lease end.
# Each script returns {state, failures, ms until a trial may start or until the trial lease ends}.
ADMIT = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'f', 'o', 't')
local failures, open_until, trial = tonumber(f[1] or '0'), tonumber(f[2] or '0'), tonumber(f[3] or '0')
if open_until == 0 then return {0, failures, 0} end
if now < open_until then return {2, failures, open_until - now} end
if trial > now then return {3, failures, trial - now} end
if ARGV[1] == '1' then redis.call('HSET', KEYS[1], 't', now + tonumber(ARGV[2])) end
return {1, failures, 0}
"""
# ARGV: threshold, reset ms, 1 if this call was the trial.
FAIL = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local failures = redis.call('HINCRBY', KEYS[1], 'f', 1)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
redis.call('PEXPIRE', KEYS[1], 86400000)
if ARGV[3] == '1' or open_until > 0 or failures >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'o', now + tonumber(ARGV[2]), 't', 0)
  return {2, failures, tonumber(ARGV[2])}
end
return {0, failures, 0}
"""


class SharedCircuit:
    """The breaker's state in Redis, one hash per bot."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace, *, trial_lease: float = 120.0) -> None:
        self.key = keys.scoped("llm", "circuit")
        self._r = client
        self._lease_ms = int(trial_lease * 1000)
        self._admit = client.register_script(ADMIT)
        self._fail = client.register_script(FAIL)

    async def admit(self, *, take_trial: bool) -> tuple[int, int, float]:
        """(0 closed / 1 half-open / 2 open / 3 another replica's trial runs, failures, seconds)."""
        out = await self._admit(keys=[self.key], args=["1" if take_trial else "0", self._lease_ms])
        return int(out[0]), int(out[1]), int(out[2]) / 1000

    async def failure(self, threshold: int, reset_after: float, *, trial: bool) -> tuple[int, int, float]:
        out = await self._fail(
            keys=[self.key], args=[threshold, int(reset_after * 1000), "1" if trial else "0"]
        )
        return int(out[0]), int(out[1]), int(out[2]) / 1000

    async def success(self) -> None:
        await self._r.delete(self.key)

    async def release_trial(self) -> None:
        await self._r.hset(self.key, "t", 0)


class CircuitBreakerLLM(LLM):
    def __init__(
        self,
        inner: LLM,
        *,
        failures: int = 5,
        reset_after: float = 30.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedCircuit | None = None,
        fresh_for: float = 1.0,
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        self.inner = inner
        self._threshold = failures
        self._reset_after = reset_after
        self._metrics = metrics
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial = False  # a half-open trial call is in flight
        self._shared = shared
        self._shared_failures = 0  # failures the shared state held when this call was admitted
        self._fresh_for = fresh_for
        self._clean_until = 0.0  # the shared circuit was closed with no failures; trust that until then
        self._redis_ok = True

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self._reset_after:
            return CircuitState.HALF_OPEN
        return self._state

    def _set(self, state: CircuitState) -> None:
        if state is not self._state:
            log.warning("llm_circuit", state=state.name.lower(), failures=self._failures)
            if state is CircuitState.OPEN and self._metrics is not None:
                self._metrics.circuit_opens.labels(self._metrics.bot).inc()
        self._state = state
        if self._metrics is not None:
            self._metrics.circuit_state.labels(self._metrics.bot).set(int(state))

    def _admit(self) -> bool:
        """Let a call through (True if it is the half-open trial), or raise :class:`CircuitOpen`."""
        state = self.state
        if state is CircuitState.CLOSED:
            return False
        if state is CircuitState.HALF_OPEN and not self._trial:
            self._set(CircuitState.HALF_OPEN)
            self._trial = True
            return True
        if self._metrics is not None:
            self._metrics.llm_errors.labels(self._metrics.bot, "CircuitOpen").inc()
        wait = max(0.0, self._reset_after - (self._clock() - self._opened_at))
        raise CircuitOpen(f"the model endpoint keeps failing; circuit open, next try in {wait:.0f}s")

    def _success(self) -> None:
        self._failures = 0
        self._set(CircuitState.CLOSED)

    def _mirror(self, state: int, failures: int, seconds: float) -> None:
        """Take the shared state as this replica's own."""
        self._failures = failures
        if state in (2, 3):  # 3: half-open, with another replica's trial under way
            left = seconds if state == 2 else 0.0
            self._opened_at = self._clock() - max(0.0, self._reset_after - left)
            self._set(CircuitState.OPEN)
        elif state == 0:
            self._set(CircuitState.CLOSED)

    def _lost_redis(self, exc: Exception) -> None:
        if self._redis_ok:
            log.warning("llm_circuit_shared_unavailable", error=type(exc).__name__)
        self._redis_ok = False

    async def refresh(self) -> CircuitState:
        """Read the shared state (readiness asks this); without Redis, the local view."""
        if self._shared is not None:
            try:
                self._mirror(*await self._shared.admit(take_trial=False))
                self._redis_ok = True
            except (RedisError, OSError) as exc:
                self._lost_redis(exc)
        return self.state

    async def _admit_shared(self) -> bool:
        assert self._shared is not None
        try:
            state, failures, seconds = await self._shared.admit(take_trial=True)
        except (RedisError, OSError) as exc:
            self._lost_redis(exc)
            return self._admit()
        self._redis_ok = True
        self._shared_failures = failures
        if state == 0:
            self._mirror(state, failures, seconds)
            if not failures:
                self._clean_until = self._clock() + self._fresh_for
            return False
        if state == 1:
            self._failures = failures
            self._set(CircuitState.HALF_OPEN)
            return True
        self._mirror(state, failures, seconds)
        if self._metrics is not None:
            self._metrics.llm_errors.labels(self._metrics.bot, "CircuitOpen").inc()
        raise CircuitOpen(f"the model endpoint keeps failing; circuit open, next try in {seconds:.0f}s")

    async def _settle(self, ok: bool, trial: bool) -> None:
        """Record a call's outcome, in Redis when shared (a success writes only when there is a count)."""
        if self._shared is None or not self._redis_ok:
            if ok:
                self._success()
            else:
                self._failure()
            return
        try:
            if ok:
                if trial or self._shared_failures or self._state is not CircuitState.CLOSED:
                    await self._shared.success()
                self._success()
            else:
                self._clean_until = 0.0
                state, failures, seconds = await self._shared.failure(
                    self._threshold, self._reset_after, trial=trial
                )
                self._mirror(state, failures, seconds)
        except (RedisError, OSError) as exc:
            self._lost_redis(exc)
            if ok:
                self._success()
            else:
                self._failure()

    def _failure(self) -> None:
        self._failures += 1
        if self._state is CircuitState.OPEN or self._trial or self._failures >= self._threshold:
            self._opened_at = self._clock()
            self._set(CircuitState.OPEN)

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        shared = self._shared is not None and self._redis_ok
        if shared and self._clock() < self._clean_until and self._state is CircuitState.CLOSED:
            trial, self._shared_failures = False, 0  # seen clean a moment ago: no round trip
        else:
            trial = await self._admit_shared() if shared else self._admit()
        settled = False
        try:
            async with aclosing(self.inner.stream(request)) as events:
                async for event in events:
                    if isinstance(event, LLMEnd):
                        settled = True
                        await self._settle(True, trial)
                    yield event
        except LLMError as exc:
            if not settled:
                settled = True
                if isinstance(exc, COUNTED) and not isinstance(exc, PacedOut):
                    await self._settle(False, trial)
                elif trial and self._shared is not None:
                    await self._release_trial()
            raise
        finally:
            if trial:
                self._trial = False
                if not settled and self._state is CircuitState.HALF_OPEN:
                    self._state = CircuitState.OPEN  # the trial was abandoned: stay open, retry later
                    if self._shared is not None:
                        await self._release_trial()

    async def _release_trial(self) -> None:
        assert self._shared is not None
        try:
            await self._shared.release_trial()
        except (RedisError, OSError) as exc:
            self._lost_redis(exc)

    async def aclose(self) -> None:
        await self.inner.aclose()


class MeteredLLM(LLM):
    """Observe time to first token and failures of every call of ``inner``."""

    def __init__(
        self, inner: LLM, metrics: Metrics, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.inner = inner
        self._metrics = metrics
        self._clock = clock

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        started = self._clock()
        first = True
        try:
            async with aclosing(self.inner.stream(request)) as events:
                async for event in events:
                    if first and isinstance(event, LLMDelta):
                        first = False
                        self._metrics.ttft.labels(self._metrics.bot).observe(self._clock() - started)
                    yield event
        except LLMError as exc:
            self._metrics.llm_errors.labels(self._metrics.bot, type(exc).__name__).inc()
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()
