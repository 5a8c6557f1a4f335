"""Redis stopped and restarted mid-conversation (append-only persistence): the bot answers an error (or
without memory, per config) while it is down, then goes on with its earlier memory, by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.ops.delivery import DispatchOutcome as Outcome
from core.prompt import is_context
from core.redis_server import RedisServer
from core.runtime import open_runtime
from tests.conftest import make_app, make_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.scale.helpers import FAST, MemoryDelivery, running_worker, scale_spec, turn


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", tcp=True, appendonly=True)
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


def settings_for(server: RedisServer, llm: FakeOpenAI, tmp_path: Path, **extra: Any) -> Any:
    return make_settings(
        redis_url=server.url,
        openai_base_url=llm.base_url,
        openai_api_key="test-key",
        parley_data_dir=tmp_path / "data",
        **{**FAST, **extra},
    )


async def test_redis_down_then_back_the_conversation_goes_on_with_its_memory(
    own_redis: RedisServer, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    delivery = MemoryDelivery()
    async with open_runtime(scale_spec(), make_app(settings_for(own_redis, fake_openai, tmp_path))) as rt:
        rt.ops.deliveries.register("test", delivery)
        persona = rt.bot.persona(None)
        async with running_worker(rt):
            assert (await rt.dispatcher.dispatch(turn("My name is Ada."))).outcome is Outcome.QUEUED
            await delivery.wait_for(1)

            await asyncio.to_thread(own_redis.stop)  # SIGTERM: the append-only file is flushed
            down = await rt.dispatcher.dispatch(turn("What is my name?"))
            assert down.outcome is Outcome.FALLBACK  # the queue is unreachable: answered in this process
            await delivery.wait_for(2)
            assert (delivery.delivered[1].text, delivery.delivered[1].kind) == (persona.memory_error, "error")
            assert "redis" in await rt.ops.http.readiness()

            await asyncio.to_thread(own_redis.start)  # same port, same data
            back = await rt.dispatcher.dispatch(turn("And now, what is my name?"))
            assert back.outcome is Outcome.QUEUED  # the client reconnected by itself
            await delivery.wait_for(3, within=20)
        assert await rt.ops.http.readiness() == {}
        memory = await rt.engine.memory.load(turn("x").place, tail=50)
        metrics = rt.ops.metrics.render().decode()

    assert delivery.delivered[2].text == "You said: And now, what is my name?"
    last_prompt = [m["content"] for m in fake_openai.chat_requests[-1].body["messages"]]
    assert "My name is Ada." in last_prompt  # the earlier memory survived the restart
    assert "You said: My name is Ada." in last_prompt
    assert "What is my name?" not in last_prompt  # the failed turn left nothing behind
    assert [m.text for m in memory.messages] == [
        "My name is Ada.",
        "You said: My name is Ada.",
        "And now, what is my name?",
        "You said: And now, what is my name?",
    ]
    assert 'parley_queue_events_total{bot="arcade",event="fallback"} 1.0' in metrics


async def test_redis_down_with_answer_without_memory(
    own_redis: RedisServer, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    delivery = MemoryDelivery()
    spec = scale_spec(when_unavailable="answer")
    async with open_runtime(
        spec, make_app(settings_for(own_redis, fake_openai, tmp_path, parley_queue=False))
    ) as rt:
        rt.ops.deliveries.register("test", delivery)
        await rt.dispatcher.dispatch(turn("I like tea."))
        await delivery.wait_for(1)
        await asyncio.to_thread(own_redis.kill)  # no goodbye this time
        await rt.dispatcher.dispatch(turn("What do I like?"))
        await delivery.wait_for(2)
        await asyncio.to_thread(own_redis.start)
        await rt.dispatcher.dispatch(turn("Tell me again?"))
        await delivery.wait_for(3, within=20)
        memory = await rt.engine.memory.load(turn("x").place, tail=50)

    degraded = delivery.delivered[1]
    assert (degraded.text, degraded.kind) == ("You said: What do I like?", "answer")
    messages = fake_openai.chat_requests[1].body["messages"]
    blind = [m["role"] for m in messages if not is_context(m["content"])]  # the speaker's name is no memory
    assert blind == ["system", "user"]  # answered without memory
    assert [m.text for m in memory.messages] == [
        "I like tea.",
        "You said: I like tea.",
        "Tell me again?",
        "You said: Tell me again?",
    ]
