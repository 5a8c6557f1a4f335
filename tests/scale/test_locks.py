"""The conversation lock: lease renewal, loss, the engine guard, and the fenced final write."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from core.errors import LeaseLost
from core.keys import KeySpace
from core.memory import Fence, NewMessage, RedisMemory
from core.ops.lock import DIRECT, WORKER, ConversationLocks
from core.redis_server import free_port
from tests.scale.helpers import turn

KEYS = KeySpace("arcade")
PLACE = turn("x").place
OTHER = turn("y", thread="elsewhere").place


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

    stale = Fence(lease.conversation, lease.key, "w:not-our-token", inbox, "item-1")
    with pytest.raises(LeaseLost):
        await memory.record(PLACE, message, fence=stale)
    assert await redis_client.llen(inbox) == 2  # type: ignore[misc]
    assert (await memory.load(PLACE, tail=10)).messages == ()  # nothing written behind the owner's back

    not_head = Fence(lease.conversation, lease.key, lease.token, inbox, "item-2")
    await memory.record(PLACE, message, fence=not_head)  # the head is not item-2: written, nothing retired
    assert await redis_client.lrange(inbox, 0, -1) == ["item-1", "item-2"]  # type: ignore[misc]
    await memory.record(
        PLACE, message, fence=Fence(lease.conversation, lease.key, lease.token, inbox, "item-1")
    )
    assert await redis_client.lrange(inbox, 0, -1) == ["item-2"]  # type: ignore[misc]
    assert len((await memory.load(PLACE, tail=10)).messages) == 2

    elsewhere = Fence(KEYS.conversation(OTHER), lease.key, lease.token)
    with pytest.raises(ValueError, match="cannot guard"):  # was: dropped, and the write went ahead unfenced
        await memory.record(PLACE, message, fence=elsewhere)
    assert len((await memory.load(PLACE, tail=10)).messages) == 2


async def test_hold_waits_then_gives_up_and_yields_the_fence_when_taken(
    redis_client: aioredis.Redis,
) -> None:
    lk = locks(redis_client, lease=5, wait=0.2)
    lease, _ = await lk.try_acquire(PLACE, WORKER)
    assert lease is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with lk.hold(PLACE) as fence:  # someone else holds it: wait, then go on (advisory)
        assert fence is None
    assert 0.15 <= loop.time() - started < 1.0
    await lk.release(lease)
    async with lk.hold(PLACE) as fence:
        assert fence is not None and fence.conversation == lease.conversation
        assert await redis_client.get(fence.lock_key) == fence.token
    assert await redis_client.get(lease.key) is None


async def test_the_guard_lets_the_turn_through_when_redis_is_down() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=None)
    try:
        async with locks(client).hold(PLACE) as held:
            assert held is None  # the engine then degrades (memory_error, or an answer without memory)
    finally:
        await client.aclose()
