"""The provider's rate limits as one budget in Redis, shared by every replica; LLM calls are paced by it.

Three things can hold a call back, all kept in one Redis hash per model and judged by one Lua script on the
server's clock (so replicas with skewed clocks agree):

- a *pause*: a 429 from the endpoint (seen by an httpx hook, the openai client's own retries included) sets
  "paused until" from ``Retry-After`` / ``retry-after-ms`` (1 s without one) and every replica waits it out;
- the *header view*: the last ``x-ratelimit-remaining-{requests,tokens}`` / ``x-ratelimit-reset-*`` seen,
  less what was started after that response's call; when it runs out, calls wait for the reset;
- the *configured window*: ``rpm`` / ``tpm`` for servers that send no headers, counted in 1 s buckets
  over the last 61 s (a ring of 64 fields), so no 60 s window ever holds more than the limit.

A call's token cost before it starts is its prompt (the TokenCounter) plus ``max_tokens``; the real usage
corrects the window afterwards. A call waits (sleeping, not polling) until the budget allows it, at most
``max_wait`` seconds in all; past that the user gets the persona's error text (:class:`PacedOut`). A 429 is
retried (up to ``retries`` times) after the shared pause instead of being apologised for.

Redis cost per call: one script to start, one to settle when there is something to record (headers came,
or a TPM window needs the real usage). When nothing limits a model (no pause, no header view, no RPM/TPM)
starts skip Redis for ``quiet_for`` seconds after a start that saw so: the quiet path costs one round trip
per second per replica, and a pause set elsewhere is seen within that second.

If Redis fails, calls go ahead unpaced (the provider's own 429s remain the backstop).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from core.errors import LLMRateLimited
from core.keys import KeySpace
from core.llm import LLM, LLMEnd, LLMEvent, LLMRequest, ResponseObserver
from core.ops.metrics import Metrics
from core.settings import ModelLimits
from core.tokens import TokenCounter

log = structlog.get_logger("parley.pacing")

DEFAULT_PAUSE = 1.0  # seconds all replicas wait after a 429 that names no Retry-After
KEY_TTL_MS = 3_600_000  # an idle model's budget hash is dropped after an hour


class PacedOut(LLMRateLimited):
    """The shared budget would not allow the call within the configured maximum wait (nothing was sent)."""


@runtime_checkable
class ObservesResponses(Protocol):
    def observe_responses(self, observer: ResponseObserver) -> None: ...


# -- headers

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(value: str) -> float | None:
    """``"1s"``, ``"6m0s"``, ``"250ms"``, ``"1h2m3.5s"`` or plain seconds (``"20"``) -> seconds."""
    value = value.strip().lower()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class RateHeaders:
    """What one response said about the budget (None: not sent)."""

    remaining_requests: int | None = None
    reset_requests: float | None = None  # seconds
    remaining_tokens: int | None = None
    reset_tokens: float | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateHeaders:
        def duration(name: str) -> float | None:
            raw = headers.get(name)
            return parse_duration(raw) if raw else None

        return cls(
            _int(headers.get("x-ratelimit-remaining-requests")),
            duration("x-ratelimit-reset-requests"),
            _int(headers.get("x-ratelimit-remaining-tokens")),
            duration("x-ratelimit-reset-tokens"),
        )

    @property
    def useful(self) -> bool:
        return (self.remaining_requests is not None and self.reset_requests is not None) or (
            self.remaining_tokens is not None and self.reset_tokens is not None
        )


# -- the shared budget

# KEYS[1] the model's hash. ARGV: rpm, tpm, cost (tokens), key ttl ms. Returns {0, wait_ms} or
# {1, bucket, seq_r, seq_t, quiet}; quiet: nothing limits this model now (no pause, header view or rpm/tpm).
# Fields: p = paused until (ms); hr/hra, ht/hta = header view remaining and its reset time (ms);
# sr/st = requests/tokens started so far (to discount a header view by what started after its call);
# w<slot> = "bucket:requests:tokens" for 1 s bucket ``bucket`` (slot = bucket % 64).
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm > 0 and cost > tpm then cost = tpm end
local f = redis.call('HMGET', KEYS[1], 'p', 'hr', 'hra', 'ht', 'hta')
local wait = 0
local p = tonumber(f[1] or '0')
if p > now then wait = p - now end
local hr, hra, ht, hta = tonumber(f[2]), tonumber(f[3] or '0'), tonumber(f[4]), tonumber(f[5] or '0')
if hr and hra > now and hr < 1 and hra - now > wait then wait = hra - now end
if ht and hta > now and ht < cost and hta - now > wait then wait = hta - now end
local b = math.floor(now / 1000)
if rpm > 0 or tpm > 0 then
  local names = {}
  for i = 0, 63 do names[i + 1] = 'w' .. i end
  local ring = redis.call('HMGET', KEYS[1], unpack(names))
  local req, tok = {}, {}
  local used_r, used_t = 0, 0
  for k = b - 60, b do
    local v = ring[(k % 64) + 1]
    local r, tk = 0, 0
    if v then
      local kb, vr, vt = string.match(v, '^(%-?%d+):(%d+):(%d+)$')
      if tonumber(kb) == k then r, tk = tonumber(vr), tonumber(vt) end
    end
    req[k], tok[k] = r, tk
    used_r, used_t = used_r + r, used_t + tk
  end
  -- bucket k counts until bucket k + 61 begins; wait for enough old buckets to fall out
  local function until_room(used, need, per)
    if need <= 0 then return 0 end
    local freed = 0
    for k = b - 60, b do
      freed = freed + per[k]
      if freed >= need then return (k + 61) * 1000 - now end
    end
    return 61000
  end
  if rpm > 0 then
    local w = until_room(used_r, used_r + 1 - rpm, req)
    if w > wait then wait = w end
  end
  if tpm > 0 then
    local w = until_room(used_t, used_t + cost - tpm, tok)
    if w > wait then wait = w end
  end
end
if wait > 0 then return {0, wait} end
local slot = 'w' .. (b % 64)
local v = redis.call('HGET', KEYS[1], slot)
local r, tk = 0, 0
if v then
  local kb, vr, vt = string.match(v, '^(%-?%d+):(%d+):(%d+)$')
  if tonumber(kb) == b then r, tk = tonumber(vr), tonumber(vt) end
end
redis.call('HSET', KEYS[1], slot, b .. ':' .. (r + 1) .. ':' .. (tk + cost))
if hr and hra > now then redis.call('HINCRBY', KEYS[1], 'hr', -1) end
if ht and hta > now then redis.call('HINCRBY', KEYS[1], 'ht', -cost) end
local sr = redis.call('HINCRBY', KEYS[1], 'sr', 1)
local st = redis.call('HINCRBY', KEYS[1], 'st', cost)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
local quiet = 0
if rpm == 0 and tpm == 0 and p <= now and not (hr and hra > now) and not (ht and hta > now) then quiet = 1 end
return {1, b, sr, st, quiet}
"""

# KEYS[1]. ARGV: bucket, token correction, seq_r, seq_t (after the call's own start; '' = unknown),
# remaining requests, reset ms, remaining tokens, reset ms ('' = not sent). The header view is discounted
# by what started after this call (those reached the provider after it answered).
SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
if delta ~= 0 and b >= 0 then
  local slot = 'w' .. (b % 64)
  local v = redis.call('HGET', KEYS[1], slot)
  if v then
    local kb, vr, vt = string.match(v, '^(%-?%d+):(%d+):(%d+)$')
    if tonumber(kb) == b then
      local tk = tonumber(vt) + delta
      if tk < 0 then tk = 0 end
      redis.call('HSET', KEYS[1], slot, b .. ':' .. vr .. ':' .. tk)
    end
  end
end
local f = redis.call('HMGET', KEYS[1], 'sr', 'st')
local sr, st = tonumber(f[1] or '0'), tonumber(f[2] or '0')
if ARGV[3] == '' then sr, st = 0, 0 end
if ARGV[5] ~= '' and ARGV[6] ~= '' then
  local rem = tonumber(ARGV[5]) - (sr - tonumber(ARGV[3] ~= '' and ARGV[3] or '0'))
  redis.call('HSET', KEYS[1], 'hr', rem, 'hra', now + tonumber(ARGV[6]))
end
if ARGV[7] ~= '' and ARGV[8] ~= '' then
  local rem = tonumber(ARGV[7]) - (st - tonumber(ARGV[4] ~= '' and ARGV[4] or '0'))
  redis.call('HSET', KEYS[1], 'ht', rem, 'hta', now + tonumber(ARGV[8]))
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[9]))
return 1
"""

# KEYS[1]. ARGV: pause ms. "Paused until" only ever moves later.
PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local p = tonumber(redis.call('HGET', KEYS[1], 'p') or '0')
if until_ms > p then redis.call('HSET', KEYS[1], 'p', until_ms) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return until_ms
"""


@dataclass(frozen=True, slots=True)
class Grant:
    """A started call's place in the budget (what :meth:`ProviderBudget.settle` needs)."""

    bucket: int  # -1: started unpaced (the model was quiet), nothing to correct
    seq_requests: int
    seq_tokens: int
    cost: int
    quiet: bool = False


class ProviderBudget:
    """The Redis side: one hash per model under the bot's key space."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace) -> None:
        self._r = client
        self._keys = keys
        self._acquire = client.register_script(ACQUIRE)
        self._settle = client.register_script(SETTLE)
        self._pause = client.register_script(PAUSE)

    def key(self, model: str) -> str:
        return self._keys.scoped("llm", "budget", model)

    async def try_acquire(self, model: str, limits: ModelLimits, cost: int) -> Grant | float:
        """Start a call now (a :class:`Grant`) or say how many seconds to wait first."""
        out = await self._acquire(keys=[self.key(model)], args=[limits.rpm, limits.tpm, cost, KEY_TTL_MS])
        if int(out[0]) == 0:
            return int(out[1]) / 1000
        charged = min(cost, limits.tpm) if limits.tpm else cost
        return Grant(int(out[1]), int(out[2]), int(out[3]), charged, bool(int(out[4])))

    async def settle(
        self, model: str, grant: Grant, used_tokens: int | None, seen: RateHeaders | None
    ) -> None:
        delta = used_tokens - grant.cost if used_tokens is not None else 0
        h = seen or RateHeaders()

        def arg(value: float | None, scale: float = 1) -> str:
            return "" if value is None else str(int(value * scale))

        counted = grant.bucket >= 0
        await self._settle(
            keys=[self.key(model)],
            args=[
                grant.bucket,
                delta if counted else 0,
                grant.seq_requests if counted else "",
                grant.seq_tokens if counted else "",
                arg(h.remaining_requests),
                arg(h.reset_requests, 1000),
                arg(h.remaining_tokens),
                arg(h.reset_tokens, 1000),
                KEY_TTL_MS,
            ],
        )

    async def pause(self, model: str, seconds: float) -> None:
        await self._pause(keys=[self.key(model)], args=[max(1, int(seconds * 1000)), KEY_TTL_MS])


def resolve_limits(rpm: int, tpm: int, models: Mapping[str, ModelLimits]) -> Callable[[str], ModelLimits]:
    everyone = ModelLimits(rpm=rpm, tpm=tpm)
    return lambda model: models.get(model, everyone)


# -- the LLM wrapper


@dataclass
class _Call:
    model: str
    seen: RateHeaders | None = None
    retry_after: float | None = None
    limited: bool = False  # a 429 was seen (and the shared pause set)


_CURRENT: ContextVar[_Call | None] = ContextVar("parley_paced_call", default=None)


class PacedLLM(LLM):
    """Start each call of ``inner`` only when the shared provider budget allows it; retry 429s."""

    def __init__(
        self,
        inner: LLM,
        budget: ProviderBudget,
        *,
        limits: Callable[[str], ModelLimits],
        counter: TokenCounter,
        max_wait: float = 30.0,
        retries: int = 3,
        quiet_for: float = 1.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.inner = inner
        self.budget = budget
        self._limits = limits
        self._counter = counter
        self._max_wait = max_wait
        self._retries = retries
        self._quiet_for = quiet_for
        self._metrics = metrics
        self._quiet_until: dict[str, float] = {}  # model -> loop time until which starts skip Redis
        self._redis_ok = True

    def observe(self, llm: object) -> None:
        """Read the rate-limit headers of ``llm``'s responses, if it can show them (OpenAILLM can)."""
        if isinstance(llm, ObservesResponses):
            llm.observe_responses(self._on_response)

    async def _on_response(self, status: int, headers: Mapping[str, str]) -> None:
        call = _CURRENT.get()
        if call is None:
            return
        seen = RateHeaders.parse(headers)
        if seen.useful:
            call.seen = seen
        if seen.useful or status == 429:
            self._quiet_until.pop(call.model, None)
        if status == 429:
            call.limited = True
            call.retry_after = retry_after(headers)
            wait = call.retry_after if call.retry_after is not None else DEFAULT_PAUSE
            log.info("llm_rate_limited", model=call.model, pause_s=round(wait, 3))
            await self._guard(self.budget.pause(call.model, wait))

    async def _guard(self, op: Awaitable[object]) -> bool:
        """Run a budget write; a Redis failure is logged once and the call goes on unpaced."""
        try:
            await op
        except (RedisError, OSError) as exc:
            if self._redis_ok:
                log.warning("llm_pacing_unavailable", error=type(exc).__name__)
            self._redis_ok = False
            return False
        self._redis_ok = True
        return True

    async def _start(self, model: str, limits: ModelLimits, cost: int, deadline: float) -> Grant | None:
        """Wait until the budget grants a start (None: Redis down, go unpaced) or raise :class:`PacedOut`."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            try:
                got = await self.budget.try_acquire(model, limits, cost)
            except (RedisError, OSError) as exc:
                if self._redis_ok:
                    log.warning("llm_pacing_unavailable", error=type(exc).__name__)
                self._redis_ok = False
                return None
            self._redis_ok = True
            if isinstance(got, Grant):
                if got.quiet:
                    self._quiet_until[model] = loop.time() + self._quiet_for
                waited = loop.time() - began
                if waited > 0.001 and self._metrics is not None:
                    self._metrics.llm_paced.labels(self._metrics.bot).observe(waited)
                return got
            left = deadline - loop.time()
            if got > left:
                raise PacedOut(f"the model's rate limit needs a {got:.0f}s wait; try again shortly")
            # a little jitter so waiters on several replicas do not all ask in the same millisecond
            await asyncio.sleep(got + random.uniform(0.0, 0.02))

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        limits = self._limits(request.model)
        cost = self._counter.count_messages_cached(m.content for m in request.messages) + request.max_tokens
        deadline = asyncio.get_running_loop().time() + self._max_wait
        attempt = 0
        while True:
            if asyncio.get_running_loop().time() < self._quiet_until.get(request.model, 0.0):
                grant: Grant | None = Grant(-1, 0, 0, cost)  # nothing limits the model: no round trip
            else:
                grant = await self._start(request.model, limits, cost, deadline)
            call = _Call(request.model)
            async with aclosing(self.inner.stream(request)) as events:
                token = _CURRENT.set(call)
                try:
                    first = await anext(events)
                except LLMRateLimited:
                    attempt += 1
                    self._quiet_until.pop(request.model, None)
                    if not call.limited:  # no hook saw it (another LLM): pause everyone ourselves
                        await self._guard(self.budget.pause(request.model, DEFAULT_PAUSE))
                    if attempt > self._retries:
                        raise
                    if self._metrics is not None:
                        self._metrics.llm_429_retries.labels(self._metrics.bot).inc()
                    continue
                except StopAsyncIteration:
                    return
                finally:
                    _CURRENT.reset(token)
                event = first
                while True:
                    if isinstance(event, LLMEnd) and grant is not None:
                        used = (
                            event.usage.prompt_tokens + event.usage.completion_tokens if event.usage else None
                        )
                        if call.seen is not None or (limits.tpm and used is not None):
                            await self._guard(self.budget.settle(request.model, grant, used, call.seen))
                    yield event
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        return

    async def aclose(self) -> None:
        await self.inner.aclose()
