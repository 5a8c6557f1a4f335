"""The LLM circuit breaker: opens on repeated endpoint failures, fails fast, probes, closes on recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from core.errors import ContextTooLong, LLMError, LLMRejected, LLMUnavailable
from core.llm import ChatMessage, LLMDelta, LLMEnd, LLMEvent, LLMRequest
from core.ops.breaker import CircuitBreakerLLM, CircuitOpen, CircuitState
from core.ops.metrics import Metrics
from tests.conftest import RuntimeFactory
from tests.fakes.openai_server import Error, FakeOpenAI
from tests.scale.helpers import FAST, scale_spec, turn

REQUEST = LLMRequest([ChatMessage("user", "hi")], "m")


class ScriptedLLM:
    """An LLM port that plays a script: an error fails the call, None answers; then it answers."""

    def __init__(self, *script: LLMError | None) -> None:
        self.script = list(script)
        self.calls = 0

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        self.calls += 1
        step = self.script.pop(0) if self.script else None
        if step is not None:
            raise step
        yield LLMDelta("ok")
        yield LLMEnd("stop", None)

    async def aclose(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def call(llm: CircuitBreakerLLM) -> str:
    return "".join([e.text async for e in llm.stream(REQUEST) if isinstance(e, LLMDelta)])


async def test_the_circuit_opens_fails_fast_half_opens_and_closes() -> None:
    clock = Clock()
    inner = ScriptedLLM(*(LLMUnavailable("500") for _ in range(4)))
    metrics = Metrics("b")
    breaker = CircuitBreakerLLM(inner, failures=3, reset_after=10, metrics=metrics, clock=clock)
    for _ in range(3):
        with pytest.raises(LLMUnavailable):
            await call(breaker)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpen):
        await call(breaker)
    assert inner.calls == 3  # failed fast, the endpoint was left alone
    clock.now += 10
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(LLMUnavailable):  # the trial call fails: open again, for another reset period
        await call(breaker)
    assert breaker.state is CircuitState.OPEN
    clock.now += 10
    assert await call(breaker) == "ok"
    assert breaker.state is CircuitState.CLOSED
    text = metrics.render().decode()
    assert 'parley_llm_circuit_state{bot="b"} 0.0' in text
    assert 'parley_llm_circuit_opens_total{bot="b"} 2.0' in text
    assert 'parley_llm_errors_total{bot="b",error="CircuitOpen"} 1.0' in text


async def test_request_errors_do_not_count_and_a_success_resets_the_count() -> None:
    down = LLMUnavailable("500")
    inner = ScriptedLLM(
        LLMRejected("400"), ContextTooLong("long"), down, None, down, LLMRejected("401"), down
    )
    breaker = CircuitBreakerLLM(inner, failures=2, reset_after=10)
    for expected in (LLMRejected, ContextTooLong, LLMUnavailable):
        with pytest.raises(expected):
            await call(breaker)
    assert await call(breaker) == "ok"  # the count starts again
    for expected in (LLMUnavailable, LLMRejected):
        with pytest.raises(expected):
            await call(breaker)
    assert breaker.state is CircuitState.CLOSED  # one endpoint failure since the success
    with pytest.raises(LLMUnavailable):
        await call(breaker)
    assert breaker.state is CircuitState.OPEN


async def test_users_get_the_error_text_while_the_llm_fails_and_answers_when_it_recovers(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(*(Error(500) for _ in range(3)))
    async with runtime_factory(
        spec=scale_spec(), **FAST, parley_llm_breaker_failures=3, parley_llm_breaker_reset=0.5
    ) as rt:
        persona = rt.bot.persona(None)
        for i in range(4):
            result = await rt.engine.collect(turn(f"hello {i}"))
            assert (result.kind.value, result.text) == ("error", persona.error)
        assert len(fake_openai.chat_requests) == 3  # the fourth never reached the endpoint
        assert rt.ops.breaker is not None
        assert rt.ops.breaker.state is CircuitState.OPEN
        assert "llm" in await rt.ops.http.readiness()
        assert 'parley_llm_circuit_state{bot="arcade"} 2.0' in rt.ops.metrics.render().decode()

        await asyncio.sleep(0.6)
        result = await rt.engine.collect(turn("are you back?"))
        assert (result.kind.value, result.text) == ("answer", "You said: are you back?")
        assert rt.ops.breaker.state is CircuitState.CLOSED
        assert "llm" not in await rt.ops.http.readiness()
        text = rt.ops.metrics.render().decode()
    assert 'parley_llm_circuit_state{bot="arcade"} 0.0' in text
    assert 'parley_llm_errors_total{bot="arcade",error="LLMUnavailable"} 3.0' in text
    assert 'parley_turns_total{bot="arcade",kind="error",platform="test"} 4.0' in text
