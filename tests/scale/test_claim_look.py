"""The worker's claim loop is scheduled from the pending entries' idle times (issue 25: a quiet bot costs
nothing), not polled: at rest one XPENDING per ``claim_idle``, and a dead owner's turn is claimed with one
XAUTOCLAIM once its idle time is up. Counted by the Redis server (INFO commandstats), not timed."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from tests.conftest import RuntimeFactory
from tests.scale.helpers import FAST, MemoryDelivery, eventually, scale_spec, turn


async def _calls(client: aioredis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_quiet_worker_does_not_poll_for_dead_owners(
    runtime_factory: RuntimeFactory, redis_client: aioredis.Redis
) -> None:
    async with runtime_factory(spec=scale_spec(), **FAST) as rt:
        rt.ops.deliveries.register("test", MemoryDelivery())
        worker = rt.ops.worker(rt.engine)
        worker.claim_idle = 30.0  # nothing pending: the next look is due in 30 s
        worker.block = 3600.0  # the read waits: only the claim loop talks to Redis
        before = await _calls(redis_client, "xpending")
        task = asyncio.create_task(worker.run())
        try:

            async def first_look() -> bool:
                return await _calls(redis_client, "xpending") > before and worker._reading is not None

            await eventually(first_look, what="the worker's first claim look")
            looks, claims = await _calls(redis_client, "xpending"), await _calls(redis_client, "xautoclaim")
            await asyncio.sleep(2.5)  # at rest: the 1 s poll this replaces made 2-3 XAUTOCLAIMs by now
            assert await _calls(redis_client, "xpending") == looks
            assert await _calls(redis_client, "xautoclaim") == claims
        finally:
            worker.stop()
            await asyncio.wait_for(task, 10)


async def test_a_dead_consumers_turn_is_claimed_once_its_idle_time_is_up(
    runtime_factory: RuntimeFactory, redis_client: aioredis.Redis
) -> None:
    delivery = MemoryDelivery()
    async with runtime_factory(spec=scale_spec(), **FAST) as rt:
        queue = rt.ops.queue
        assert queue is not None
        rt.ops.deliveries.register("test", delivery)
        await queue.ensure_group()
        await rt.dispatcher.dispatch(turn("left behind", event_id="EvDead"))
        (signal,) = await queue.read("dead-replica", count=1, block_ms=100)  # read, never answered
        claims = await _calls(redis_client, "xautoclaim")
        worker = rt.ops.worker(rt.engine)
        worker.claim_idle = 1.5
        task = asyncio.create_task(worker.run())
        try:
            (reply,) = await delivery.wait_for(1, within=20)
        finally:
            await worker.shutdown(5.0)  # the turn retires (XACK) after its reply was delivered
            await asyncio.wait_for(task, 10)
        pending = await queue.pending_idle(10)
    assert (reply.text, reply.attempt) == ("You said: left behind", 2)  # claimed from the dead consumer
    assert pending == []
    # One XAUTOCLAIM, when the entry's idle time was up (polling every claim_idle / 4 made 3 or more).
    assert await _calls(redis_client, "xautoclaim") - claims == 1, signal
