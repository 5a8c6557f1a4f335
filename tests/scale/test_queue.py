"""The turn queue in-process: dedupe across enqueuers, order in a conversation, bounds, direct mode."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from core.errors import ConfigError
from core.ops.delivery import DispatchOutcome as Outcome
from tests.conftest import RuntimeFactory
from tests.fakes.openai_server import FakeOpenAI, Reply, last_user_text
from tests.scale.helpers import FAST, MemoryDelivery, eventually, running_worker, scale_spec, turn


async def test_two_enqueuers_receiving_the_same_event_give_one_reply(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    delivery = MemoryDelivery()
    spec = scale_spec()
    async with runtime_factory(spec=spec, **FAST) as a, runtime_factory(spec=spec, **FAST) as b:
        a.ops.deliveries.register("test", delivery)
        b.ops.deliveries.register("test", delivery)
        # The same Slack/Discord event reaches two replicas (a retry, or two gateway sessions): same event id.
        first, second = turn("hello there", event_id="Ev42"), turn("hello there", event_id="Ev42")
        results = await asyncio.gather(a.dispatcher.dispatch(first), b.dispatcher.dispatch(second))
        assert sorted(r.outcome for r in results) == [Outcome.DUPLICATE, Outcome.QUEUED]
        async with running_worker(a), running_worker(b):
            await delivery.wait_for(1)
            await asyncio.sleep(0.5)  # time for a second, wrong, reply to show up
    assert [d.text for d in delivery.delivered] == ["You said: hello there"]
    assert len(fake_openai.chat_requests) == 1


@pytest.mark.slow
async def test_fifty_messages_sent_at_once_are_answered_in_order_none_lost(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.responder = lambda body: Reply(f"You said: {last_user_text(body)}", first_delay=0.002)
    delivery = MemoryDelivery()
    spec = scale_spec(summary=False)  # every LLM request is then a chat turn
    async with runtime_factory(spec=spec, **FAST) as a, runtime_factory(spec=spec, **FAST) as b:
        for rt in (a, b):
            rt.ops.deliveries.register("test", delivery)
        async with running_worker(a), running_worker(b):
            for i in range(50):  # two replicas take the burst, alternating
                outcome = await (a if i % 2 else b).dispatcher.dispatch(turn(f"m{i:02d}"))
                assert outcome.outcome is Outcome.QUEUED
            await delivery.wait_for(50, within=30)
        memory = await a.engine.memory.load(turn("x").place, tail=200)
    assert [d.text for d in delivery.delivered] == [f"You said: m{i:02d}" for i in range(50)]
    # One at a time: every prompt already holds the previous exchange.
    prompts = [r.body["messages"] for r in fake_openai.chat_requests]
    assert len(prompts) == 50
    for i in range(1, 50):
        contents = [m["content"] for m in prompts[i]]
        assert contents[-1].endswith(f"m{i:02d}")
        assert any(c.endswith(f"m{i - 1:02d}") for c in contents[:-1]), i
    users = [m.text for m in memory.messages if m.role == "user"]
    assert users == [f"m{i:02d}" for i in range(50)]
    roles = [m.role for m in memory.messages]
    assert roles == ["user", "assistant"] * 50


async def test_a_full_queue_answers_busy_and_recovers_after_trimming(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, redis_client: aioredis.Redis
) -> None:
    delivery = MemoryDelivery()
    async with runtime_factory(spec=scale_spec(), **FAST, parley_queue_max=3) as rt:
        rt.ops.deliveries.register("test", delivery)
        outcomes = [(await rt.dispatcher.dispatch(turn(f"q{i}", thread=f"t{i}"))).outcome for i in range(5)]
        assert outcomes == [Outcome.QUEUED] * 3 + [Outcome.BUSY] * 2
        await delivery.wait_for(2)
        busy = rt.bot.persona(None).busy
        assert [(d.text, d.kind) for d in delivery.delivered] == [(busy, "refusal")] * 2
        async with running_worker(rt):
            await delivery.wait_for(5)

            async def trimmed() -> bool:
                return int(await redis_client.xlen(rt.ops.queue.stream)) <= 1  # type: ignore[union-attr]

            await eventually(trimmed, what="acknowledged entries trimmed")
            assert (await rt.dispatcher.dispatch(turn("again", thread="t9"))).outcome is Outcome.QUEUED
            await delivery.wait_for(6)
    answered = sorted(d.text for d in delivery.delivered if d.kind == "answer")
    assert answered == ["You said: again", "You said: q0", "You said: q1", "You said: q2"]


async def test_one_conversation_cannot_fill_the_queue(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    delivery = MemoryDelivery()
    async with runtime_factory(spec=scale_spec(), **FAST, parley_queue_max_per_conversation=2) as rt:
        rt.ops.deliveries.register("test", delivery)
        got = [await rt.dispatcher.dispatch(turn(f"q{i}")) for i in range(3)]
        assert [g.outcome for g in got] == [
            Outcome.QUEUED,
            Outcome.QUEUED,
            Outcome.BUSY,
        ]
        assert got[2].reason == "conversation_full"
        assert (await rt.dispatcher.dispatch(turn("elsewhere", thread="t2"))).outcome is Outcome.QUEUED
        async with running_worker(rt):
            await delivery.wait_for(4)
    assert sorted(d.text for d in delivery.delivered if d.kind == "answer") == [
        "You said: elsewhere",
        "You said: q0",
        "You said: q1",
    ]


async def test_without_the_queue_the_conversation_lock_serialises_direct_turns(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.responder = lambda body: Reply(f"You said: {last_user_text(body)}", chunk_chars=2, delay=0.01)
    delivery = MemoryDelivery()
    async with runtime_factory(spec=scale_spec(), **FAST, parley_queue=False) as rt:
        rt.ops.deliveries.register("test", delivery)
        results = await asyncio.gather(*(rt.dispatcher.dispatch(turn(t)) for t in ("one", "two")))
        assert [r.outcome for r in results] == [Outcome.DIRECT, Outcome.DIRECT]
        await delivery.wait_for(2)
    first, second = (r.body["messages"] for r in fake_openai.chat_requests)
    asked_first = first[-1]["content"]
    # The second request was sent only after the first turn was written: it carries that exchange.
    assert [m["content"] for m in second[-3:-1]] == [asked_first, f"You said: {asked_first}"]


async def test_the_dispatcher_needs_a_delivery_for_the_platform(runtime_factory: RuntimeFactory) -> None:
    async with runtime_factory(spec=scale_spec(), **FAST) as rt:
        with pytest.raises(ConfigError, match="no Delivery registered for platform 'nowhere'"):
            await rt.dispatcher.dispatch(turn("hi", platform="nowhere"))


async def test_consumers_of_gone_processes_are_pruned_unless_they_hold_work(
    runtime_factory: RuntimeFactory, redis_client: aioredis.Redis
) -> None:
    async with runtime_factory(spec=scale_spec(), **FAST) as rt:
        queue = rt.ops.queue
        assert queue is not None
        rt.ops.deliveries.register("test", MemoryDelivery())
        await queue.ensure_group()
        for i in range(2):
            await rt.dispatcher.dispatch(turn(f"q{i}", thread=f"t{i}"))
        (done,) = await queue.read("gone-and-done", count=1, block_ms=100)
        await queue.ack(done.entry_id)
        await queue.read("gone-with-work", count=1, block_ms=100)
        await asyncio.sleep(0.05)
        assert await queue.prune_consumers(idle=0.01) == 1
        consumers = await redis_client.xinfo_consumers(queue.stream, "workers")
    assert [c["name"] for c in consumers] == ["gone-with-work"]  # its entry is claimed later, then it goes


async def test_a_quiet_worker_stops_at_once_though_its_reads_wait_long(
    runtime_factory: RuntimeFactory,
) -> None:
    """At rest a worker asks Redis for signals once per ``block`` (4 s as shipped); stop() cancels the
    waiting read instead of letting it run out."""
    async with runtime_factory(spec=scale_spec(), **FAST) as rt:
        delivery = MemoryDelivery()
        rt.ops.deliveries.register("test", delivery)
        worker = rt.ops.worker(rt.engine)
        worker.block = 3600.0  # longer than any test: only the cancel can end this read
        task = asyncio.create_task(worker.run())

        async def reading() -> bool:
            return worker._reading is not None  # the state under test

        await eventually(reading, what="the worker waiting for signals")
        worker.stop()
        await asyncio.wait_for(task, 5)
        # A turn dispatched afterwards waits for a live worker, which answers it.
        await rt.dispatcher.dispatch(turn("after", thread="t-after"))
        async with running_worker(rt):
            await delivery.wait_for(1)


async def test_direct_turns_are_capped_then_busy(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    """Queue off (or Redis down): at most PARLEY_DIRECT_MAX turns run here at once; the next hears "busy"."""
    fake_openai.responder = lambda body: Reply(f"You said: {last_user_text(body)}")
    delivery = MemoryDelivery()
    async with runtime_factory(spec=scale_spec(), **FAST, parley_queue=False, parley_direct_max=1) as rt:
        rt.ops.deliveries.register("test", delivery)
        first = await rt.dispatcher.dispatch(turn("one", thread="a"))
        second = await rt.dispatcher.dispatch(turn("two", thread="b"))  # the first is still running
        assert (first.outcome, second.outcome, second.reason) == (Outcome.DIRECT, Outcome.BUSY, "direct_full")
        got = await delivery.wait_for(2)
        await rt.dispatcher.tasks.drain()
        third = await rt.dispatcher.dispatch(turn("three", thread="c"))  # the first has ended: room again
        assert third.outcome is Outcome.DIRECT
        await delivery.wait_for(3)
    assert sorted(d.kind for d in got[:2]) == ["answer", "refusal"]
