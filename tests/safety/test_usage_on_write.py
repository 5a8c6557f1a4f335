"""Token quotas are counted inside the turn's final memory write: exactly once, in the same round trip."""

from __future__ import annotations

import redis.asyncio as aioredis

from bots.loader import load_bot
from core.safety.limits import user_tag
from core.types import Author, Place, Turn
from tests.conftest import RuntimeFactory
from tests.fakes.openai_server import FakeOpenAI, Reply


async def test_usage_is_counted_once_per_turn(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, redis_client: aioredis.Redis
) -> None:
    fake_openai.queue(Reply("one two three", chunk_chars=4), Reply("four five", chunk_chars=4))
    turn = Turn(author=Author("u9", "Zed"), place=Place("test", "w9", "c9", "t9"), text="hi")
    async with runtime_factory(spec=load_bot("arcade")) as rt:
        first = await rt.engine.collect(turn)
        await redis_client.script_flush()  # as after a Redis restart: every script answers NOSCRIPT once
        second = await rt.engine.collect(Turn(author=turn.author, place=turn.place, text="again"))
        user_key = rt.keys.scoped("limit", "quota", "user", f"test:{user_tag('test', 'u9')}", "86400s")
        space_key = rt.keys.scoped("limit", "quota", "workspace", "test:w9", "86400s")
        used_user = int(await redis_client.get(user_key) or 0)
        used_space = int(await redis_client.get(space_key) or 0)
        slots = await redis_client.keys(rt.keys.scoped("limit", "slots", "*"))
        held = [
            m for key in slots if not key.endswith(":clock") for m in await redis_client.zrange(key, 0, -1)
        ]
    total = first.usage.total + second.usage.total
    assert total > 0
    assert used_user == used_space == total
    assert held == []  # the generation slots were freed by the same write
    assert (
        len(await redis_client.lrange(rt.keys.messages(turn.place), 0, -1)) == 4
    )  # nothing lost, nothing twice
