"""Built-in commands through the real engine."""

from __future__ import annotations

import redis.asyncio as aioredis

from bots.loader import load_bot
from core.bot import BotSpec
from core.types import CommandCall, ReplyKind
from tests.conftest import RuntimeFactory, single_shot_story
from tests.core.helpers import make_turn
from tests.fakes.openai_server import FakeOpenAI, Reply


def single_shot() -> BotSpec:
    return single_shot_story(load_bot("arcade"))


async def test_help_lists_commands_without_calling_the_llm(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    async with runtime_factory() as rt:
        result = await rt.engine.collect(make_turn("/help"))
    assert result.kind is ReplyKind.COMMAND and result.ephemeral
    for name in ("/story", "/reset", "/persona", "/help"):
        assert name in result.text
    assert fake_openai.chat_requests == []


async def test_reset_forgets_one_conversation_only(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, redis_client: aioredis.Redis
) -> None:
    async with runtime_factory() as rt:
        await rt.engine.collect(make_turn("secret plan A", thread="a"))
        await rt.engine.collect(make_turn("secret plan B", thread="b"))
        result = await rt.engine.collect(make_turn("/reset", thread="a"))
        assert "forgotten" in result.text
        assert not await redis_client.exists(rt.keys.messages(make_turn("", thread="a").place))
        assert await redis_client.exists(rt.keys.messages(make_turn("", thread="b").place))
        await rt.engine.collect(make_turn("what was the plan?", thread="a"))
    contents = [m["content"] for m in fake_openai.chat_requests[-1].body["messages"]]
    assert "secret plan A" not in contents and "what was the plan?" in contents


async def test_persona_switch_needs_an_admin_and_is_stored_per_conversation(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    async with runtime_factory() as rt:
        listing = await rt.engine.collect(make_turn("/persona"))
        assert "pirate" in listing.text and "host" in listing.text
        denied = await rt.engine.collect(make_turn("/persona pirate"))
        assert denied.kind is ReplyKind.REFUSAL
        switched = await rt.engine.collect(make_turn("/persona pirate", admin=True))
        assert "Saltbeard" in switched.text
        answer = await rt.engine.collect(make_turn("hello"))
        assert answer.persona == "pirate"
        other = await rt.engine.collect(make_turn("hello", thread="elsewhere"))
        assert other.persona == "host"
        unknown = await rt.engine.collect(make_turn("/persona wizard", admin=True))
        assert "don't know" in unknown.text
    system = fake_openai.chat_requests[0].body["messages"][0]["content"]
    assert "Captain Saltbeard" in system


async def test_story_uses_the_storyteller_with_options_and_can_continue(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(
        Reply("**The Otter Map**\nOnce upon a time an otter found a map."),
        Reply("The otter followed the map to the sea."),
    )
    async with runtime_factory(spec=single_shot()) as rt:
        call = CommandCall("story", "an otter and a map", {"genre": "mystery", "length": "long"})
        first = await rt.engine.collect(make_turn("/story", command=call))
        assert first.kind is ReplyKind.COMMAND and "otter found a map" in first.text
        assert first.persona == "host"  # the conversation keeps its persona; the story is the storyteller's
        cont = await rt.engine.collect(make_turn("/story continue"))
        assert "followed the map" in cont.text
    req1, req2 = (r.body for r in fake_openai.chat_requests)
    assert "storyteller" in req1["messages"][0]["content"]
    assert "Genre: mystery" in req1["messages"][1]["content"]
    assert "an otter and a map" in req1["messages"][1]["content"]
    assert req1["max_tokens"] == 1600  # "long"
    assert req2["messages"][1] == {"role": "assistant", "content": first.text}
    assert req2["messages"][2]["content"].startswith("Continue the story")


async def test_story_without_prompt_explains_usage_and_text_commands_parse(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    async with runtime_factory(spec=single_shot()) as rt:
        empty = await rt.engine.collect(make_turn("/story"))
        assert "/story" in empty.text
        nothing = await rt.engine.collect(make_turn("/story continue"))
        assert "no story to continue" in nothing.text
        await rt.engine.collect(make_turn("/story --genre horror --length short a haunted lighthouse"))
        chat = await rt.engine.collect(make_turn("/notacommand hello"))
    story_req = fake_openai.chat_requests[0].body
    assert "Genre: horror" in story_req["messages"][1]["content"]
    assert "a haunted lighthouse" in story_req["messages"][1]["content"]
    assert chat.kind is ReplyKind.ANSWER  # unknown "/x" is just chat
    assert len(fake_openai.chat_requests) == 2


async def test_stories_are_remembered_in_the_conversation(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(Reply("A tale of two teapots."))
    async with runtime_factory(spec=single_shot()) as rt:
        await rt.engine.collect(make_turn("/story teapots"))
        await rt.engine.collect(make_turn("who was in the story?"))
    contents = [m["content"] for m in fake_openai.chat_requests[-1].body["messages"]]
    assert "A tale of two teapots." in contents
