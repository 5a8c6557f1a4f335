"""The conversation lock: lease renewal, loss, the engine guard, and the fenced final write."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from core.errors import LeaseLost
from core.keys import KeySpace
from core.memory import Fence, NewMessage, RedisMemory, current_fence
from core.ops.lock import DIRECT, WORKER, ConversationLocks
from core.redis_server import free_port
from tests.scale.helpers import turn

KEYS = KeySpace("arcade")
PLACE = turn("x").place


def locks(client: aioredis.Redis, lease: float = 0.3, wait: float = 0.2) -> ConversationLocks:
    return ConversationLocks(client, KEYS, lease=lease, wait=wait, owner="test")


async def test_a_held_lease_is_renewed_and_released(redis_client: aioredis.Redis) -> None:
    lk = locks(redis_client)
    lease, _ = await lk.try_acquire(PLACE, WORKER)
    assert lease is not None
    async with lk.keep(lease):
        await asyncio.sleep(1.0)  # three leases long
        assert await redis_client.get(lease.key) == lease.token
        other, holder = await lk.try_acquire(PLACE, DIRECT)
        assert other is None
        assert holder == lease.token
    await lk.release(lease)
    assert await redis_client.get(lease.key) is None
    assert not lease.lost


async def test_an_unrenewed_lease_expires_and_a_stolen_one_is_noticed(redis_client: aioredis.Redis) -> None:
    lk = locks(redis_client)
    lease, _ = await lk.try_acquire(PLACE, WORKER)
    assert lease is not None
    await asyncio.sleep(0.4)
    assert await redis_client.get(lease.key) is None  # finite lease: a dead holder frees the conversation
    lease, _ = await lk.try_acquire(PLACE, WORKER)
    assert lease is not None
    async with lk.keep(lease):
        await redis_client.set(lease.key, "w:someone-else:1", px=5000)
        await asyncio.sleep(0.3)
        assert lease.lost
    await lk.release(lease)  # not ours any more: left alone
    assert await redis_client.get(lease.key) == "w:someone-else:1"


async def test_the_final_write_checks_the_lease_and_retires_the_queue_item(
    redis_client: aioredis.Redis,
) -> None:
    memory = RedisMemory(redis_client, KEYS, max_messages=50, ttl_seconds=600)
    lk = locks(redis_client, lease=5)
    lease, _ = await lk.try_acquire(PLACE, WORKER)
    assert lease is not None
    inbox = KEYS.conversation(PLACE) + ":inbox"
    await redis_client.rpush(inbox, "item-1", "item-2")  # type: ignore[misc]
    message = [NewMessage("user", "hello", 1)]

    token = current_fence.set(Fence(lease.conversation, lease.key, "w:not-our-token", inbox, "item-1"))
    try:
        with pytest.raises(LeaseLost):
            await memory.record(PLACE, message)
    finally:
        current_fence.reset(token)
    assert await redis_client.llen(inbox) == 2  # type: ignore[misc]
    assert (await memory.load(PLACE, tail=10)).messages == ()  # nothing written behind the owner's back

    token = current_fence.set(Fence(lease.conversation, lease.key, lease.token, inbox, "item-2"))
    try:
        await memory.record(PLACE, message)  # the head is not item-2: written, nothing retired
        assert await redis_client.lrange(inbox, 0, -1) == ["item-1", "item-2"]  # type: ignore[misc]
        current_fence.set(Fence(lease.conversation, lease.key, lease.token, inbox, "item-1"))
        await memory.record(PLACE, message)
    finally:
        current_fence.reset(token)
    assert await redis_client.lrange(inbox, 0, -1) == ["item-2"]  # type: ignore[misc]
    assert len((await memory.load(PLACE, tail=10)).messages) == 2


async def test_the_guard_is_reentrant_for_the_holder_and_gives_up_waiting(
    redis_client: aioredis.Redis,
) -> None:
    lk = locks(redis_client, lease=5, wait=0.2)
    lease, _ = await lk.try_acquire(PLACE, WORKER)
    assert lease is not None
    token = current_fence.set(Fence(lease.conversation, lease.key, lease.token))
    try:
        async with asyncio.timeout(1):
            async with lk.guard(turn("hi")) as held:  # the worker already holds it: no deadlock
                assert held is None
    finally:
        current_fence.reset(token)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with lk.guard(turn("hi")) as held:  # someone else holds it: wait, then go on (advisory)
        assert held is None
    assert 0.15 <= loop.time() - started < 1.0
    await lk.release(lease)
    async with lk.guard(turn("hi")) as held:
        assert held is not None
        assert current_fence.get() == Fence(lease.conversation, held.key, held.token)
        assert await redis_client.get(held.key) == held.token
    assert current_fence.get() is None
    assert await redis_client.get(lease.key) is None


async def test_the_guard_lets_the_turn_through_when_redis_is_down() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=None)
    try:
        async with locks(client).guard(turn("hi")) as held:
            assert held is None  # the engine then degrades (memory_error, or an answer without memory)
    finally:
        await client.aclose()
