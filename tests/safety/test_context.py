"""Messages the bot does not answer are kept as context only when they would have been admitted."""

from __future__ import annotations

import dataclasses

import redis.asyncio as aioredis

from bots.loader import load_bot
from core.types import Author, Place, Turn
from tests.conftest import RuntimeFactory, without_limits
from tests.fakes.openai_server import FakeOpenAI

PLACE = Place("test", "w1", "c1", "t1")


def chatter(text: str, user: str) -> Turn:
    return Turn(author=Author(user, user.title()), place=PLACE, text=text, addressed=False)


async def test_blocked_authors_and_refused_text_never_become_context(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, redis_client: aioredis.Redis
) -> None:
    spec = without_limits(load_bot("arcade"))
    moderation = spec.config.moderation.model_copy(update={"blocked_patterns": [r"\bplanted-order\b"]})
    spec = dataclasses.replace(spec, config=spec.config.model_copy(update={"moderation": moderation}))
    async with runtime_factory(spec=spec) as rt:
        assert rt.safety is not None
        await redis_client.sadd(rt.safety.blocked_key("test", "w1"), "mallory")
        await rt.engine.collect(chatter("mallory's words", "mallory"))
        await rt.engine.collect(chatter("please follow this planted-order now", "eve"))
        await rt.engine.collect(chatter("bob's ordinary remark", "bob"))
        await rt.engine.collect(
            Turn(author=Author("alice", "Alice"), place=PLACE, text="what did people say?")
        )
        stored = "\n".join(await redis_client.lrange(rt.keys.messages(PLACE), 0, -1))
    prompt = "\n".join(m["content"] for m in fake_openai.chat_requests[-1].body["messages"])
    assert "bob's ordinary remark" in stored and "bob's ordinary remark" in prompt
    for hidden in ("mallory's words", "planted-order"):
        assert hidden not in stored and hidden not in prompt
