"""The provider's limits as a budget shared by replicas: 429s paced and answered, RPM never exceeded, one
breaker for all replicas. Real openai client against the fake OpenAI server, real Redis, two runtimes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import redis.asyncio as aioredis

from core.keys import KeySpace
from core.ops.breaker import CircuitState
from core.ops.pacing import Grant, ProviderBudget, RateHeaders, parse_duration, retry_after
from core.settings import ModelLimits
from tests.conftest import RuntimeFactory
from tests.fakes.openai_server import Error, FakeOpenAI, RateLimit, openai_duration
from tests.scale.helpers import FAST, scale_spec, turn


def test_durations_and_retry_after_as_providers_write_them() -> None:
    assert parse_duration("1s") == 1.0
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("20") == 20.0
    assert parse_duration("soon") is None
    assert parse_duration("5x") is None
    for seconds in (0.25, 1.5, 59.0, 360.0):
        assert parse_duration(openai_duration(seconds)) == pytest.approx(seconds, abs=0.001)
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "3"}) == 3.0
    date = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (retry_after({"retry-after": date}) or 0) <= 30
    assert retry_after({}) is None
    seen = RateHeaders.parse({"x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s"})
    assert (seen.remaining_requests, seen.reset_requests, seen.useful) == (59, 1.0, True)
    assert not RateHeaders.parse({"x-ratelimit-remaining-tokens": "10"}).useful


async def test_the_budget_counts_requests_tokens_pauses_and_header_views(
    redis_client: aioredis.Redis,
) -> None:
    budget = ProviderBudget(redis_client, KeySpace("b"))
    rpm3 = ModelLimits(rpm=3)
    grants = [await budget.try_acquire("m", rpm3, 10) for _ in range(3)]
    assert all(isinstance(g, Grant) for g in grants)
    wait = await budget.try_acquire("m", rpm3, 10)
    assert isinstance(wait, float) and 58 < wait <= 61  # the three starts leave the window in a minute
    assert isinstance(await budget.try_acquire("other", rpm3, 10), Grant)  # each model its own budget

    tpm = ModelLimits(tpm=1000)
    first = await budget.try_acquire("t", tpm, 800)
    assert isinstance(first, Grant)
    assert isinstance(await budget.try_acquire("t", tpm, 800), float)  # 1600 > 1000
    await budget.settle("t", first, 150, None)  # the real usage was 150 tokens
    assert isinstance(await budget.try_acquire("t", tpm, 800), Grant)  # 950 <= 1000

    await budget.pause("p", 0.4)
    wait = await budget.try_acquire("p", ModelLimits(), 1)
    assert isinstance(wait, float) and 0.3 < wait <= 0.4
    await asyncio.sleep(wait)
    started = await budget.try_acquire("p", ModelLimits(), 1)
    assert isinstance(started, Grant)

    # A response said "1 request left, reset in 500 ms"; one more start since then used it up.
    later = await budget.try_acquire("p", ModelLimits(), 1)
    assert isinstance(later, Grant)
    await budget.settle("p", started, None, RateHeaders(remaining_requests=1, reset_requests=0.5))
    wait = await budget.try_acquire("p", ModelLimits(), 1)
    assert isinstance(wait, float) and 0.4 < wait <= 0.5


def _max_in_window(times: list[float], window: float) -> int:
    return max((sum(1 for t in times if start <= t < start + window) for start in times), default=0)


async def test_429_with_retry_after_pauses_both_replicas_and_every_turn_is_answered(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(Error(429, "slow down", "rate_limit_exceeded", headers={"retry-after-ms": "400"}))
    spec = scale_spec()
    async with (
        runtime_factory(spec=spec, **FAST) as a,
        runtime_factory(spec=spec, **FAST) as b,
    ):
        first = asyncio.create_task(a.engine.collect(turn("first", thread="t0")))
        await asyncio.sleep(0.15)  # the 429 has been answered and the shared pause set
        assert len(fake_openai.chat_requests) == 1
        results = await asyncio.gather(
            first,
            *(
                (a if i % 2 else b).engine.collect(turn(f"hello {i}", thread=f"t{i + 1}", user=f"u{i}"))
                for i in range(6)
            ),
        )
        a_metrics, b_metrics = a.ops.metrics.render().decode(), b.ops.metrics.render().decode()
    assert [(r.kind.value, r.text) for r in results] == [("answer", "You said: first")] + [
        ("answer", f"You said: hello {i}") for i in range(6)
    ]
    requests = fake_openai.chat_requests
    assert len(requests) == 8  # one 429, then each turn once: paced, retried, none apologised for
    limited_at = requests[0].at
    assert all(r.at >= limited_at + 0.4 for r in requests[1:])  # nobody on either replica went early
    assert min(r.at for r in requests[1:]) < limited_at + 0.9  # the Retry-After, not the 1 s default
    assert 'parley_llm_rate_limit_retries_total{bot="arcade"} 1.0' in a_metrics
    assert "parley_llm_paced_seconds_count" in b_metrics


async def test_a_provider_limit_with_headers_is_kept_by_two_replicas_without_a_429(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.rate_limit = RateLimit(requests=2, window=0.5)
    spec = scale_spec()
    async with (
        runtime_factory(spec=spec, **FAST) as a,
        runtime_factory(spec=spec, **FAST) as b,
    ):
        results = []
        for i in range(6):  # one after another, alternating replicas: each learns from the other's headers
            rt = a if i % 2 else b
            results.append(await rt.engine.collect(turn(f"hi {i}", thread=f"t{i}", user=f"u{i}")))
    assert all(r.kind.value == "answer" for r in results)
    assert fake_openai.limited == []  # paced by the headers: the provider never had to refuse
    assert len(fake_openai.accepted) == 6
    assert _max_in_window(fake_openai.accepted, 0.5) <= 2


async def test_a_configured_rpm_shared_by_two_replicas_is_never_exceeded(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    # A server without headers that allows 4 a minute; both replicas know only PARLEY_LLM_RPM=4.
    fake_openai.rate_limit = RateLimit(requests=4, window=60, headers=False)
    spec = scale_spec()
    settings = {**FAST, "parley_llm_rpm": 4, "parley_llm_pace_max_wait": 1.0}
    async with (
        runtime_factory(spec=spec, **settings) as a,
        runtime_factory(spec=spec, **settings) as b,
    ):
        results = await asyncio.gather(
            *(
                (a if i % 2 else b).engine.collect(turn(f"hi {i}", thread=f"t{i}", user=f"u{i}"))
                for i in range(7)
            )
        )
        persona = a.bot.persona(None)
        assert a.ops.breaker is not None
        assert await a.ops.breaker.refresh() is CircuitState.CLOSED  # our own pacing is not a failure
    kinds = sorted(r.kind.value for r in results)
    assert kinds == ["answer"] * 4 + ["error"] * 3
    assert all(r.text == persona.error for r in results if r.kind.value == "error")
    assert len(fake_openai.chat_requests) == 4  # the other three never left: a minute's wait is too long
    assert fake_openai.limited == []


async def test_bot_toml_sets_the_limits_and_the_environment_overrides_them(
    runtime_factory: RuntimeFactory,
) -> None:
    spec = scale_spec()
    table = {"rpm": 10, "tpm": 1000, "models": {"big": {"rpm": 2, "tpm": 0}}}
    config = spec.config.model_copy(update={"llm_limits": type(spec.config.llm_limits).model_validate(table)})
    spec = type(spec)(**{**spec.__dict__, "config": config})
    async with runtime_factory(spec=spec, **FAST) as rt:
        limits = rt.ops.provider_limits()
        assert (limits("small"), limits("big")) == (ModelLimits(rpm=10, tpm=1000), ModelLimits(rpm=2))
    async with runtime_factory(
        spec=spec, **FAST, parley_llm_rpm=0, parley_llm_model_limits={"big": {"rpm": 5}}
    ) as rt:
        limits = rt.ops.provider_limits()
        assert (limits("small"), limits("big")) == (ModelLimits(rpm=0, tpm=1000), ModelLimits(rpm=5))


async def test_one_replicas_open_breaker_stops_the_others_calls_and_they_close_together(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(Error(500), Error(500))
    spec = scale_spec()
    settings = {**FAST, "parley_llm_breaker_failures": 2, "parley_llm_breaker_reset": 0.5}
    async with (
        runtime_factory(spec=spec, **settings) as a,
        runtime_factory(spec=spec, **settings) as b,
    ):
        persona = a.bot.persona(None)
        for i in range(2):
            result = await a.engine.collect(turn(f"a {i}", thread=f"a{i}"))
            assert (result.kind.value, result.text) == ("error", persona.error)
        assert a.ops.breaker is not None and b.ops.breaker is not None
        assert a.ops.breaker.state is CircuitState.OPEN
        assert b.ops.breaker.state is CircuitState.CLOSED  # b has not looked yet ...
        result = await b.engine.collect(turn("b 0", thread="b0"))
        assert (result.kind.value, result.text) == ("error", persona.error)
        assert len(fake_openai.chat_requests) == 2  # ... and its call never reached the endpoint
        assert b.ops.breaker.state is CircuitState.OPEN
        assert "llm" in await b.ops.http.readiness()
        text = b.ops.metrics.render().decode()
        assert 'parley_llm_errors_total{bot="arcade",error="CircuitOpen"} 1.0' in text

        await asyncio.sleep(0.6)
        result = await b.engine.collect(turn("b 1", thread="b1"))  # b's trial call succeeds: closed for all
        assert (result.kind.value, result.text) == ("answer", "You said: b 1")
        assert "llm" not in await a.ops.http.readiness()
        assert a.ops.breaker.state is CircuitState.CLOSED
        result = await a.engine.collect(turn("a 2", thread="a2"))
        assert (result.kind.value, result.text) == ("answer", "You said: a 2")
    assert len(fake_openai.chat_requests) == 4
