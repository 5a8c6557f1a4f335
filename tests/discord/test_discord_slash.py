"""Slash commands end to end: registration, the 3-second deferral, streaming into the response, fallbacks."""

from __future__ import annotations

import asyncio
import functools
import itertools
from typing import Any

import pytest
import structlog

from adapters.discord.commands import option_name
from adapters.discord.sink import MOVED
from bots.loader import load_bot
from core.errors import ConfigError
from tests.conftest import single_shot_story
from tests.discord.conftest import BotFactory
from tests.fakes.discord import FakeDiscord, InteractionState
from tests.fakes.discord import payloads as p
from tests.fakes.openai_server import Behaviour, FakeOpenAI, Reply, echo, last_user_text


def original(state: InteractionState) -> str:
    """The path pattern of edits to an interaction's original response (by id, or as @original)."""
    return rf"/webhooks/\d+/[^/]+/messages/({state.original_id}|@original)"


CALLBACK = r"/interactions/\d+/[^/]+/callback"


@pytest.fixture
def bot_factory(bot_factory: BotFactory) -> BotFactory:
    """These tests stream the one-reply /story (arcade ships the branching one, tested in tests/media)."""
    return functools.partial(bot_factory, spec=single_shot_story(load_bot("arcade")))


def story_text(words: int) -> str:
    return " ".join(f"tale{i}" for i in range(words))


def stories_are(reply: Reply) -> Any:
    """A responder: story prompts get ``reply``, anything else the echo."""

    def respond(body: dict[str, Any]) -> Behaviour:
        return reply if "short story" in last_user_text(body) else echo(body)

    return respond


async def test_story_is_deferred_at_once_then_streamed_while_the_bot_answers_others(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    story = story_text(100)  # ~700 chars in 50 chunks, 0.05 s apart, held half-way until the test lets go
    held = asyncio.Event()
    fake_openai.responder = stories_are(Reply(story, chunk_chars=14, delay=0.05, hold=held, hold_at=25))
    async with bot_factory(edit_interval=0.3):
        interaction = await fake.slash("story", {"prompt": "a lighthouse keeper", "genre": "fantasy"})
        state = fake.interactions[interaction["id"]]
        (callback,) = await fake.wait_for_calls("POST", CALLBACK)
        assert callback.json["type"] == 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: "thinking..."
        assert callback.query["with_response"] in ("1", "true")
        assert state.responded_at is not None  # deferred before any of the story arrived
        # The bot is not blocked while the story streams: a chat message elsewhere is answered meanwhile.
        await fake.send_message("still there?", channel=fake.random, mention_bot=True)
        await fake.wait_for(lambda: fake.bot_messages(fake.random["id"]), within=5)
        assert fake_openai.active_streams == 1  # the story is still streaming (held half-way)
        held.set()
        await fake.wait_for(lambda: fake.messages[state.original_id or ""]["content"] == story, within=20)
    edits = fake.calls_to("PATCH", original(state), ok=True)
    assert len(edits) >= 3  # streamed, not one final edit
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert min(gaps[:-1]) >= 0.24, gaps  # paced: one edit per edit_interval (the last one flushes at once)
    asked = [
        last_user_text(r.body) for r in fake_openai.chat_requests if "short story" in last_user_text(r.body)
    ]
    assert "Genre: fantasy" in asked[0]
    assert "a lighthouse keeper" in asked[0]
    assert not fake.calls_to("POST", rf"/channels/{fake.general['id']}/messages")  # no fallback needed


async def test_story_continue_option(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.queue(Reply("Once, a cat sailed."), Reply("Then the cat found an island."))
    async with bot_factory():
        first = await fake.slash("story", {"prompt": "a cat at sea"})
        await fake.wait_for(
            lambda: (
                fake.messages.get(fake.interactions[first["id"]].original_id or "", {}).get("content")
                == "Once, a cat sailed."
            )
        )
        second = await fake.slash("story", {"continue": True})
        await fake.wait_for(
            lambda: (
                fake.messages.get(fake.interactions[second["id"]].original_id or "", {}).get("content")
                == "Then the cat found an island."
            )
        )
    sent = fake_openai.chat_requests[-1].body["messages"]
    assert sent[-2] == {"role": "assistant", "content": "Once, a cat sailed."}
    assert sent[-1]["content"].startswith("Continue the story")


async def test_long_story_continues_in_follow_ups(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    story = "\n\n".join(f"Chapter {i}. " + "The wind howled over the moor. " * 20 for i in range(10))
    assert len(story) > 5_000
    fake_openai.queue(Reply(story, chunk_chars=500))
    async with bot_factory():
        interaction = await fake.slash("story", {"prompt": "a moor", "length": "long"})
        state = fake.interactions[interaction["id"]]
        await fake.wait_for(lambda: len(state.followups) >= 2)
        await fake.wait_for(
            lambda: fake.messages[state.followups[-1]]["content"].endswith("The wind howled over the moor.")
        )
    parts = [fake.messages[state.original_id or ""]["content"]] + [
        fake.messages[m]["content"] for m in state.followups
    ]
    assert all(len(part) <= 2000 for part in parts)
    assert "Chapter 0." in parts[0]
    assert "Chapter 9." in parts[-1]


async def test_help_is_deferred_privately(bot_factory: BotFactory, fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    async with bot_factory():
        interaction = await fake.slash("help")
        state = fake.interactions[interaction["id"]]
        (callback,) = await fake.wait_for_calls("POST", CALLBACK)
        assert callback.json["data"]["flags"] & 64  # EPHEMERAL
        await fake.wait_for(
            lambda: "/story" in fake.messages.get(state.original_id or "", {}).get("content", "")
        )
    assert state.ephemeral


async def test_persona_switch_needs_manage_server(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    async with bot_factory():
        denied = await fake.slash("persona", {"name": "pirate"}, author=fake.bob)
        state = fake.interactions[denied["id"]]
        await fake.wait_for(lambda: state.followups)
        refusal = fake.messages[state.followups[0]]
        assert "Only admins" in refusal["content"]
        assert refusal["flags"] & 64  # shown to the asker only...
        assert fake.deleted  # ...and the public "thinking..." was removed

        allowed = await fake.slash(
            "persona", {"name": "pirate"}, permissions=p.MEMBER_DEFAULT | p.MANAGE_GUILD
        )
        ok = fake.interactions[allowed["id"]]
        await fake.wait_for(
            lambda: "Saltbeard" in fake.messages.get(ok.original_id or "", {}).get("content", "")
        )
        await fake.send_message("who are you?", mention_bot=True)
        await fake.wait_for(lambda: fake_openai.chat_requests)
    assert "Captain Saltbeard" in fake_openai.chat_requests[-1].body["messages"][0]["content"]


async def test_interaction_falls_back_to_the_channel_before_the_token_expires(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    story = story_text(60)
    fake_openai.queue(Reply(story, chunk_chars=20, delay=0.1))  # ~2 s
    # Token life 2 s with a 1 s margin: the adapter stops using the token after 1 s.
    async with bot_factory(interaction_token_ttl=2.0, interaction_margin=1.0):
        interaction = await fake.slash("story", {"prompt": "a race against time"})
        await fake.wait_for(lambda: fake.bot_messages(fake.general["id"]))
        await fake.wait_for(lambda: fake.bot_messages(fake.general["id"])[-1]["content"] == story)
    state = fake.interactions[interaction["id"]]
    assert state.responded_at is not None
    assert all(c.status < 400 for c in fake.calls)  # switched before Discord would refuse the token
    assert all(c.at - state.dispatched_at < 1.5 for c in fake.calls_to("PATCH", original(state)))
    # The response no longer shows a half-told story: it points to where the reply went on.
    assert fake.messages[state.original_id or ""]["content"] == MOVED


async def test_interaction_falls_back_when_discord_says_the_token_is_gone(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake.interaction_token_ttl = 0.6  # Discord forgets the token early; the adapter only learns it from a 401
    story = story_text(60)
    fake_openai.queue(Reply(story, chunk_chars=20, delay=0.1))
    async with bot_factory():
        await fake.slash("story", {"prompt": "a vanishing token"})
        await fake.wait_for(lambda: fake.bot_messages(fake.general["id"]))
        await fake.wait_for(lambda: fake.bot_messages(fake.general["id"])[-1]["content"] == story)
    refused = [c for c in fake.calls if c.status == 401]
    assert len(refused) == 1  # the first refusal switched the reply to the channel
    assert refused[0].json["allowed_mentions"] == {"parse": []}


async def test_a_late_deferral_is_logged_not_fatal(
    bot_factory: BotFactory, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    fake.inject("POST", CALLBACK, 404, body={"message": "Unknown interaction", "code": 10062})
    async with bot_factory():
        with structlog.testing.capture_logs() as logs:
            await fake.slash("story", {"prompt": "too late"})
            await fake.wait_for(lambda: any(e["event"] == "discord_defer_failed" for e in logs))
        (failed,) = [e for e in logs if e["event"] == "discord_defer_failed"]
        assert failed["code"] == 10062
        assert failed["conversation"].startswith("discord:")
        # The next command works.
        again = await fake.slash("help")
        state = fake.interactions[again["id"]]
        await fake.wait_for(
            lambda: "/story" in fake.messages.get(state.original_id or "", {}).get("content", "")
        )


async def test_slash_command_in_a_dm(bot_factory: BotFactory, fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    async with bot_factory():
        interaction = await fake.slash("reset", dm=True)
        state = fake.interactions[interaction["id"]]
        await fake.wait_for(
            lambda: "forgotten" in fake.messages.get(state.original_id or "", {}).get("content", "")
        )


# ---------------------------------------------------------------------------------------------- registration


async def test_command_sync_is_skipped_when_nothing_changed(
    bot_factory: BotFactory, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    async with bot_factory(queue=False) as bot:
        registry = {option_name(c.name) for c in bot.runtime.engine.commands}
    (first,) = fake.calls_to("PUT", r"/applications/\d+/commands")
    assert {c["name"] for c in first.json} == registry
    assert {"help", "reset", "persona", "story"} <= registry
    story = next(c for c in first.json if c["name"] == "story")
    assert {o["name"] for o in story["options"]} == {"prompt", "genre", "length", "continue", "narrate"}
    with structlog.testing.capture_logs() as logs:
        async with bot_factory(queue=False):
            pass
    assert len(fake.calls_to("PUT", r"/applications/\d+/commands")) == 1  # not registered again
    assert any(e["event"] == "discord_commands_unchanged" for e in logs)
    # A different target (a development guild) is a change: registered there, at once.
    async with bot_factory(queue=False, dev_guild_id=int(fake.guild_id)):
        pass
    (guild_put,) = fake.calls_to("PUT", rf"/applications/\d+/guilds/{fake.guild_id}/commands")
    assert guild_put.json == first.json
    assert fake.commands[fake.guild_id]


async def test_sync_to_a_guild_the_bot_is_not_in_is_a_config_error(
    bot_factory: BotFactory, fake_discord: FakeDiscord
) -> None:
    with pytest.raises(ConfigError, match="DISCORD_DEV_GUILD_ID"):
        async with bot_factory(queue=False, dev_guild_id=12345):
            pass


async def test_a_command_in_a_thread_belongs_to_the_threads_conversation(
    bot_factory: BotFactory, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    thread = fake.bot_thread
    async with bot_factory(message_content=True):
        with structlog.testing.capture_logs() as logs:
            await fake.slash("reset", channel=thread)
            await fake.send_message("and now?", channel=thread)
            await fake.wait_for(lambda: len([e for e in logs if e["event"] == "turn_done"]) == 2)
    expected = f"discord:{fake.guild_id}:{thread['parent_id']}:{thread['id']}"
    assert [e["conversation"] for e in logs if e["event"] == "turn_done"] == [expected, expected]
