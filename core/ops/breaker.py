"""LLM port wrappers: a circuit breaker, and a metering layer (time to first token, errors by class).

The openai client already retries 429/5xx/connection errors with back-off (``PARLEY_LLM_MAX_RETRIES``); the
breaker sits outside those retries. After ``failures`` consecutive failed calls it *opens*: calls fail at once
with :class:`CircuitOpen`, an :class:`~core.errors.LLMUnavailable` (the engine answers the persona's error
text) instead of making every user wait for timeouts. After ``reset_after`` seconds it is *half-open*: one
trial call goes through; success closes the circuit, failure opens it again. The state is per process: each
replica judges the endpoint itself.

Only endpoint failures count (unavailable, timeout, rate limited); a rejected request or a too-long prompt
says nothing about the endpoint's health. A call abandoned by its consumer counts neither way.
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

import structlog

from core.errors import LLMError, LLMRateLimited, LLMTimeout, LLMUnavailable
from core.llm import LLM, LLMDelta, LLMEnd, LLMEvent, LLMRequest
from core.ops.metrics import Metrics

log = structlog.get_logger("parley.breaker")

COUNTED = (LLMUnavailable, LLMTimeout, LLMRateLimited)


class CircuitState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpen(LLMUnavailable):
    """The breaker refused the call without trying (the endpoint kept failing)."""


class CircuitBreakerLLM(LLM):
    def __init__(
        self,
        inner: LLM,
        *,
        failures: int = 5,
        reset_after: float = 30.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
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

    def _failure(self) -> None:
        self._failures += 1
        if self._state is CircuitState.OPEN or self._trial or self._failures >= self._threshold:
            self._opened_at = self._clock()
            self._set(CircuitState.OPEN)

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        trial = self._admit()
        settled = False
        try:
            async with aclosing(self.inner.stream(request)) as events:
                async for event in events:
                    if isinstance(event, LLMEnd):
                        settled = True
                        self._success()
                    yield event
        except LLMError as exc:
            if not settled:
                settled = True
                if isinstance(exc, COUNTED):
                    self._failure()
            raise
        finally:
            if trial:
                self._trial = False
                if not settled and self._state is CircuitState.HALF_OPEN:
                    self._state = CircuitState.OPEN  # the trial was abandoned: stay open, retry later

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
