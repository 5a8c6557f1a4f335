"""Conversation memory in a real Redis: restart, TTL, cap, summary fold, round trips."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bots.loader import load_bot
from core.bot import BotSpec
from core.memory import NewMessage
from core.redis_server import RedisServer
from core.runtime import open_runtime
from core.types import ReplyKind
from tests.conftest import RuntimeFactory, make_app, make_settings, without_limits
from tests.core.helpers import CountingConnection, make_turn
from tests.fakes.openai_server import FakeOpenAI, Reply


def spec_with_memory(bot: str = "arcade", **memory: object) -> BotSpec:
    spec = load_bot(bot)
    config = spec.config.model_copy(update={"memory": spec.config.memory.model_copy(update=memory)})
    return replace(spec, config=config)


def spec_with_budget(budget: int, **memory: object) -> BotSpec:
    spec = spec_with_memory(**memory)
    personas = {n: replace(p, history_budget=budget) for n, p in spec.personas.items()}
    return replace(spec, personas=personas)


async def test_memory_survives_a_redis_restart_with_append_only_persistence(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    server = RedisServer(tmp_path / "redis", tcp=True, appendonly=True)
    await asyncio.to_thread(server.start)
    settings = make_settings(redis_url=server.url, openai_base_url=fake_openai.base_url, openai_api_key="k")
    try:
        async with open_runtime(load_bot("arcade"), make_app(settings)) as rt:
            await rt.engine.collect(make_turn("my name is Ada and I love otters"))
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)  # same data dir, new process
        settings = make_settings(
            redis_url=server.url, openai_base_url=fake_openai.base_url, openai_api_key="k"
        )
        async with open_runtime(load_bot("arcade"), make_app(settings)) as rt:
            await rt.engine.collect(make_turn("what do I love?"))
    finally:
        await asyncio.to_thread(server.stop)
    contents = [m["content"] for m in fake_openai.chat_requests[-1].body["messages"]]
    assert "my name is Ada and I love otters" in contents
    assert "You said: my name is Ada and I love otters" in contents


async def test_embedded_redis_keeps_memory_between_runs(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """No REDIS_URL: the runtime starts its own redis-server on a unix socket under the data dir."""
    settings = make_settings(parley_data_dir=tmp_path / "data", openai_base_url=fake_openai.base_url)
    async with open_runtime(load_bot("arcade"), make_app(settings)) as rt:
        await rt.engine.collect(make_turn("remember the number 4242"))
    async with open_runtime(load_bot("arcade"), make_app(settings)) as rt:
        await rt.engine.collect(make_turn("which number?"))
    contents = [m["content"] for m in fake_openai.chat_requests[-1].body["messages"]]
    assert "remember the number 4242" in contents
    assert (tmp_path / "data" / "redis").is_dir()


async def test_ttl_and_hard_cap(runtime_factory: RuntimeFactory, redis_client: aioredis.Redis) -> None:
    spec = spec_with_memory(max_messages=6, ttl_days=1)
    async with runtime_factory(spec=spec) as rt:
        for i in range(10):
            await rt.engine.collect(make_turn(f"message {i}"))
        place = make_turn("x").place
        key = rt.keys.messages(place)
        assert await redis_client.llen(key) == 6
        assert 86_000 < await redis_client.ttl(key) <= 86_400
        assert 86_000 < await redis_client.ttl(rt.keys.meta(place)) <= 86_400
        newest = await redis_client.lrange(key, -1, -1)
        assert "You said: message 9" in newest[0]


async def test_conversations_are_separate_per_thread_and_shared_across_runtimes(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    async with runtime_factory() as rt1, runtime_factory() as rt2:
        await rt1.engine.collect(make_turn("thread one fact", thread="a"))
        await rt2.engine.collect(make_turn("thread two fact", thread="b"))
        await rt2.engine.collect(make_turn("recall", thread="a"))  # another "replica", same thread
    contents = [m["content"] for m in fake_openai.chat_requests[-1].body["messages"]]
    assert "thread one fact" in contents and "thread two fact" not in contents


async def test_long_conversation_folds_into_a_running_summary(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, redis_client: aioredis.Redis
) -> None:
    def responder(body: dict[str, object]) -> Reply:
        messages = body["messages"]
        assert isinstance(messages, list)
        if "running summary" in messages[0]["content"]:
            return Reply("SUMMARY: Ada talked about otters and boats.")
        return Reply("ok " + "filler " * 10)

    fake_openai.responder = responder
    spec = spec_with_budget(260, fold_after=4)
    async with runtime_factory(spec=spec) as rt:
        for i in range(12):
            await rt.engine.collect(make_turn(f"fact number {i} about otters " + "and boats " * 5))
            await rt.tasks.drain(5)
        place = make_turn("x").place
        meta = await redis_client.hgetall(rt.keys.meta(place))
        assert meta["summary"] == "SUMMARY: Ada talked about otters and boats."
        upto = int(meta["summary_upto"])
        assert upto >= 4
        result = await rt.engine.collect(make_turn("what did we discuss?"))
        assert result.kind is ReplyKind.ANSWER
    summary_calls = [
        r for r in fake_openai.chat_requests if "running summary" in r.body["messages"][0]["content"]
    ]
    assert summary_calls, "the fold asked the LLM for a summary"
    transcript = summary_calls[0].body["messages"][1]["content"]
    assert "fact number 0" in transcript
    last = fake_openai.chat_requests[-1].body["messages"]
    # the summary is data in a user message (it was written from users' messages), never a system message
    assert any("SUMMARY: Ada talked about otters" in m["content"] for m in last if m["role"] == "user")
    assert not any("SUMMARY" in m["content"] for m in last if m["role"] == "system")
    # what the summary covers is not repeated in the window
    assert not any(m["content"].startswith("fact number 0 ") for m in last)


@pytest.mark.parametrize(
    ("limits", "expected"), [(False, 2), (True, 2)], ids=["limits-off", "shipped-limits"]
)
async def test_a_turn_costs_two_redis_round_trips_whatever_the_history(
    redis_url: str, fake_openai: FakeOpenAI, tmp_path: Path, limits: bool, expected: int
) -> None:
    """Read (memory, dedupe, access and limit checks), write (memory, quota accounting, slot release)."""
    pool = aioredis.ConnectionPool.from_url(
        redis_url, decode_responses=True, connection_class=CountingConnection
    )
    client = aioredis.Redis(connection_pool=pool)
    settings = make_settings(openai_base_url=fake_openai.base_url, parley_data_dir=tmp_path)
    spec = spec_with_memory(max_messages=5000, fold_after=10**6)
    spec = spec if limits else without_limits(spec)
    # No story clock: its once-a-second tick on the same pool is not the turn's and would be counted.
    story = spec.config.story.model_copy(update={"branching": False})
    spec = replace(spec, config=spec.config.model_copy(update={"story": story}))
    try:
        async with open_runtime(spec, make_app(settings), redis=client) as rt:
            counts = []
            place = make_turn("x").place
            for size in (10, 4000):
                pad = [NewMessage("user" if i % 2 else "assistant", f"pad {i}", 3) for i in range(size)]
                await rt.engine.memory.record(place, pad)
                await rt.engine.collect(make_turn("warm up"))  # scripts loaded, connection open
                before = CountingConnection.sends
                await rt.engine.collect(make_turn("measure", event_id=f"ev-{size}"))
                counts.append(CountingConnection.sends - before)
    finally:
        await client.aclose()
        await pool.aclose()
    assert counts == [expected, expected], counts
