"""The Discord adapter end to end: real discord.py against the fake Discord, real Redis, fake OpenAI."""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

import pytest
import structlog

from core.errors import ConfigError
from tests.conftest import RuntimeFactory
from tests.discord.conftest import BotFactory, discord_settings, gateway_and_worker
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord import payloads as p
from tests.fakes.openai_server import FakeOpenAI, Reply, last_user_text

POST_MESSAGE = r"/channels/\d+/messages"
PINGS = re.compile(r"@(everyone|here)|<@[!&]?\d+>")
EDIT_MESSAGE = r"/channels/\d+/messages/\d+"


def posts_in(fake: FakeDiscord, channel: dict[str, Any], *, ok: bool = True) -> list[Any]:
    return fake.calls_to("POST", rf"/channels/{channel['id']}/messages", ok=ok)


@pytest.mark.parametrize("queue", [True, False], ids=["queued", "direct"])
async def test_mention_gets_a_streamed_reply(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI, queue: bool
) -> None:
    fake = fake_discord
    async with bot_factory(queue=queue, typing_after=30):
        asked = await fake.send_message("tell me a joke", mention_bot=True)
        (post,) = await fake.wait_for_calls("POST", POST_MESSAGE, ok=True)
        await fake.wait_for(lambda: fake.bot_messages()[-1]["content"] == "You said: tell me a joke")
    # The mention is not part of what the model sees.
    assert last_user_text(fake_openai.chat_requests[-1].body) == "tell me a joke"
    assert post.path == f"/channels/{fake.general['id']}/messages"
    assert str(post.json["message_reference"]["message_id"]) == asked["id"]  # a reply to the user's message
    assert post.json["message_reference"]["fail_if_not_exists"] is False
    assert post.json["flags"] & 4  # SUPPRESS_EMBEDS: a model-written link does not unfurl
    # Text came before DISCORD_TYPING_AFTER: no "typing..." call (one REST call fewer per turn).
    assert not fake.calls_to("POST", rf"/channels/{fake.general['id']}/typing")


async def test_a_reply_slow_to_show_text_shows_typing_meanwhile(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.queue(Reply("at last", first_delay=1.5))
    async with bot_factory(typing_after=0.2):
        await fake.send_message("take your time", mention_bot=True)
        (typing,) = await fake.wait_for_calls("POST", rf"/channels/{fake.general['id']}/typing")
        (post,) = await fake.wait_for_calls("POST", POST_MESSAGE, ok=True)
    assert typing.at < post.at  # "typing..." while the model had not answered yet


async def test_dm_gets_a_reply_in_the_dm(bot_factory: BotFactory, fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    async with bot_factory():
        await fake.send_dm("psst, a riddle?")
        dm = fake.dm_channel_for(fake.alice)
        await fake.wait_for(lambda: posts_in(fake, dm))
        await fake.wait_for(lambda: fake.bot_messages(dm["id"])[-1]["content"] == "You said: psst, a riddle?")


async def test_reply_to_the_bot_continues_the_conversation(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    async with bot_factory():
        await fake.send_message("first", mention_bot=True)
        await fake.wait_for(
            lambda: fake.bot_messages() and fake.bot_messages()[-1]["content"] == "You said: first"
        )
        mine = fake.bot_messages()[-1]
        await fake.send_message("and then?", reply_to=mine)
        await fake.wait_for(lambda: len(posts_in(fake, fake.general)) == 2)
        await fake.wait_for(lambda: fake.bot_messages()[-1]["content"] == "You said: and then?")
    roles = [m["role"] for m in fake_openai.chat_requests[-1].body["messages"]]
    assert roles[-3:] == ["user", "assistant", "user"]  # same conversation: memory carried over


async def test_thread_follow_up_without_mention_needs_the_content_intent(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    async with bot_factory(message_content=True) as bot:
        assert bot.adapter.client is not None
        assert bot.adapter.client.intents.message_content
        await fake.send_message("what happens next?", channel=fake.bot_thread)  # no mention
        await fake.wait_for(lambda: posts_in(fake, fake.bot_thread))
        await fake.wait_for(
            lambda: fake.bot_messages(fake.bot_thread["id"])[-1]["content"] == "You said: what happens next?"
        )
        # A thread someone else started is not followed.
        other = await fake.create_thread(owner=fake.bob)
        await fake.send_message("not for the bot", channel=other)
        await fake.send_message("but this is", channel=other, mention_bot=True)
        await fake.wait_for(lambda: posts_in(fake, other))
    assert [last_user_text(r.body) for r in fake_openai.chat_requests] == [
        "what happens next?",
        "but this is",
    ]
    assert fake.identifies[0].intents & (1 << 15)


async def test_other_bots_and_unaddressed_messages_are_ignored(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    async with bot_factory() as bot:
        assert bot.adapter.client is not None
        assert not bot.adapter.client.intents.message_content  # default: no privileged intent
        await fake.send_message("hey bot, loop with me", author=fake.other_bot, mention_bot=True)
        await fake.send_message("chatting among humans")
        await fake.send_message("the only one to answer", mention_bot=True)
        await fake.wait_for(lambda: posts_in(fake, fake.general))
        await fake.wait_for(lambda: fake.bot_messages()[-1]["content"] == "You said: the only one to answer")
        # The bot's own messages come back through the gateway too; they must not start turns.
        await asyncio.sleep(0.2)
    assert [last_user_text(r.body) for r in fake_openai.chat_requests] == ["the only one to answer"]
    assert len(posts_in(fake, fake.general)) == 1


async def test_long_reply_is_split_with_balanced_fences(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    code = "\n".join(f"    print('line {i:04d} of the spell')" for i in range(90))
    prose = "\n\n".join(f"Paragraph {i}: " + "the dragon sighed and counted coins. " * 12 for i in range(8))
    text = f"{prose}\n\n```python\ndef spell():\n{code}\n```\n\n{prose}"
    assert len(text) > 9_000
    fake_openai.queue(Reply(text, chunk_chars=400))
    async with bot_factory():
        await fake.send_message("a long one please", mention_bot=True)
        await fake.wait_for(lambda: "".join(m["content"] for m in fake.bot_messages()).endswith(prose[-50:]))
        await fake.wait_for(lambda: not any(m["content"].endswith(" …") for m in fake.bot_messages()))
    messages = [m["content"] for m in fake.bot_messages()]
    assert len(messages) >= 5
    for content in messages:
        assert 0 < len(content) <= 2000
        fences = [line for line in content.split("\n") if line.strip().startswith("```")]
        assert len(fences) % 2 == 0, content[:120]
    joined = "\n".join(messages)
    for i in range(90):
        assert f"line {i:04d} of the spell" in joined
    assert all(c.status < 400 for c in fake.calls)  # Discord never had to refuse an oversized message


async def test_everyone_from_the_model_pings_no_one(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    nasty = f"@everyone @here free pizza! <@{fake.bob['id']}> <@&{fake.guild_id}> see https://evil.example/x"
    fake_openai.queue(Reply(nasty))
    async with bot_factory():
        await fake.send_message("announce something", mention_bot=True)
        await fake.wait_for(lambda: fake.bot_messages() and "pizza" in fake.bot_messages()[-1]["content"])
        await fake.wait_for(lambda: not fake.bot_messages()[-1]["content"].endswith(" …"))
    content = fake.bot_messages()[-1]["content"]
    assert "pizza" in content
    # Whoever neutralised them (the engine's output safety, or the adapter's formatting), nothing that
    # Discord would parse as a mention is left, and the link cannot unfurl.
    assert not PINGS.search(content), content
    assert "evil.example" not in content or "<https://evil.example/x>" in content
    # assert_mention_safe (run by the fixture) checks allowed_mentions on every request, and that no one
    # was pinged.


async def test_edits_are_paced_and_a_429_on_an_edit_is_retried(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    text = " ".join(f"word{i}" for i in range(120))
    fake_openai.queue(Reply(text, chunk_chars=40, delay=0.1))  # ~2 s of streaming
    fake.inject("PATCH", EDIT_MESSAGE, 429, retry_after=0.3)
    async with bot_factory(edit_interval=0.5):
        await fake.send_message("stream please", mention_bot=True)
        await fake.wait_for(lambda: fake.bot_messages() and fake.bot_messages()[-1]["content"] == text)
    edits = fake.calls_to("PATCH", EDIT_MESSAGE)
    assert edits[0].status == 429
    assert [c.status for c in edits[1:]] == [200] * (len(edits) - 1)
    assert edits[1].path == edits[0].path  # the same edit, retried by discord.py
    ok = [c for c in edits if c.status == 200]
    assert len(ok) >= 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(ok)]
    # Never faster than the configured pace (0.5 s here), even after a 429; the final text follows the last
    # edit after a quarter of it (the answer is complete: the user is not kept waiting).
    assert min(gaps[:-1]) >= 0.4, gaps
    assert gaps[-1] >= 0.1, gaps


@pytest.mark.parametrize(("status", "error"), [(403, "Forbidden"), (404, "NotFound")])
async def test_a_refused_send_is_logged_and_the_bot_keeps_running(
    bot_factory: BotFactory, fake_discord: FakeDiscord, status: int, error: str
) -> None:
    # 403: the bot may not write there (missing permission); 404: the channel was deleted meanwhile.
    fake = fake_discord
    fake.inject("POST", rf"/channels/{fake.random['id']}/messages", status, times=10)
    async with bot_factory():
        with structlog.testing.capture_logs() as logs:
            await fake.send_message("talk here", channel=fake.random, mention_bot=True)
            await fake.wait_for(lambda: any(e["event"] == "discord_reply_incomplete" for e in logs))
        failed = [e for e in logs if e["event"] == "reply_delivery_failed"]
        assert failed
        assert failed[0]["error"] == error
        assert failed[0]["conversation"] == f"discord:{fake.guild_id}:{fake.random['id']}:"
        # Still alive: the next message elsewhere is answered.
        await fake.send_message("and here?", mention_bot=True)
        await fake.wait_for(lambda: posts_in(fake, fake.general))
        await fake.wait_for(lambda: fake.bot_messages()[-1]["content"] == "You said: and here?")


async def test_open_threads_moves_the_conversation_into_a_thread(
    bot_factory: BotFactory, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    async with bot_factory(open_threads=True):
        asked = await fake.send_message("Plan a heist with me", mention_bot=True)
        (created,) = await fake.wait_for_calls("POST", rf"/channels/\d+/messages/{asked['id']}/threads")
        assert created.json["name"] == "Plan a heist with me"
        thread_id = asked["id"]  # a thread started from a message takes the message's id
        await fake.wait_for(lambda: fake.bot_messages(thread_id))
        await fake.wait_for(
            lambda: fake.bot_messages(thread_id)[-1]["content"] == "You said: Plan a heist with me"
        )
    assert not posts_in(fake, fake.general)


async def test_two_replicas_answer_a_message_once(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    async with bot_factory(), bot_factory():
        assert len(fake.sessions) == 2
        await fake.send_message("who answers?", mention_bot=True)
        await fake.wait_for(lambda: posts_in(fake, fake.general))
        await asyncio.sleep(0.3)
    assert len(posts_in(fake, fake.general)) == 1  # the engine's dedupe on the message id, in Redis
    assert len(fake_openai.chat_requests) == 1


async def test_login_failures_back_off_then_recover(
    bot_factory: BotFactory, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    fake.inject("GET", "/users/@me", 503, times=3)
    with structlog.testing.capture_logs() as logs:
        async with bot_factory(queue=False, login_backoff_base=0.1) as bot:
            assert await bot.runtime.redis.get(bot.runtime.keys.scoped("discord", "login_failures")) is None
    waits = [e["retry_in"] for e in logs if e["event"] == "discord_backoff"]
    assert [e["failures"] for e in logs if e["event"] == "discord_backoff"] == [1, 2, 3]
    assert waits[0] <= 0.1 < waits[2]  # exponential: 0.05-0.1, 0.1-0.2, 0.2-0.4
    assert len(fake.identifies) == 1  # only the successful login reached the gateway


async def test_a_rejected_token_stops_with_one_clear_error(
    bot_factory: BotFactory, fake_discord: FakeDiscord
) -> None:
    with pytest.raises(ConfigError, match="DISCORD_TOKEN"):
        async with bot_factory(queue=False, token="not-the-token"):
            pass
    assert not fake_discord.identifies


async def test_explicit_shards_take_the_gateway_from_the_configured_api(
    bot_factory: BotFactory, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    fake.max_concurrency = 2  # two IDENTIFY buckets: both shards may start at once
    # A window far longer than the test: were the shards serialised in one bucket, the second would wait it.
    async with bot_factory(shard_count=2, shard_ids="0,1", identify_window=60.0) as bot:
        assert sorted(i.shard for i in fake.identifies) == [(0, 2), (1, 2)]
        redis, keys = bot.runtime.redis, bot.runtime.keys
        assert [await redis.get(keys.scoped("discord", "identify", b)) for b in "01"] == ["0", "1"]
        assert bot.adapter.client is not None
        assert bot.adapter.client.shard_count == 2
        await fake.send_message("which shard?", mention_bot=True)
        await fake.wait_for(lambda: posts_in(fake, fake.general))


async def test_identifies_in_one_bucket_are_spaced_across_processes(
    bot_factory: BotFactory, fake_discord: FakeDiscord
) -> None:
    # Two processes, one shard each, one IDENTIFY bucket (max_concurrency 1): the second identifies only
    # once the first's slot (a Redis key living one window) is gone. How far apart they land is a timing:
    # tests/discord/bench_identify.py measures it.
    fake = fake_discord
    async with bot_factory(queue=False, shard_count=2, shard_ids=[0], identify_window=60.0) as first:
        slot = first.runtime.keys.scoped("discord", "identify", "0")
        assert await first.runtime.redis.get(slot) == "0"  # shard 0 holds the bucket for its window
        assert 0 < await first.runtime.redis.pttl(slot) <= 60_000
        await first.runtime.redis.pexpire(slot, 1)  # the window passes
        async with bot_factory(queue=False, shard_count=2, shard_ids=[1], identify_window=60.0):
            assert [i.shard for i in fake.identifies] == [(0, 2), (1, 2)]
            assert await first.runtime.redis.get(slot) == "1"  # and now shard 1 holds it


async def test_one_process_can_run_a_subset_of_shards(
    bot_factory: BotFactory, fake_discord: FakeDiscord
) -> None:
    async with bot_factory(queue=False, shard_count=4, shard_ids=[3]):
        assert [i.shard for i in fake_discord.identifies] == [(3, 4)]


def test_sinks_and_payload_builders_agree_on_the_limit() -> None:
    from adapters.discord.sink import MESSAGE_LIMIT
    from tests.fakes.discord.server import MAX_CONTENT

    assert MESSAGE_LIMIT == MAX_CONTENT == 2000
    assert p.snowflake() != p.snowflake()


async def test_a_workers_only_process_answers_what_the_gateway_process_queued(
    runtime_factory: RuntimeFactory, fake_discord: FakeDiscord
) -> None:
    """``parley run --adapters-only`` here, ``--workers-only`` there: the queued route is all the worker
    needs; it answers over REST with its own client, with no gateway connection."""
    fake = fake_discord
    async with gateway_and_worker(runtime_factory, discord_settings(fake)):
        await fake.send_message("who answers me?", mention_bot=True)
        await fake.wait_for(lambda: fake.bot_messages())
        await fake.wait_for(lambda: fake.bot_messages()[-1]["content"] == "You said: who answers me?")
        await fake.slash("help")
        await fake.wait_for(lambda: any("/story" in m["content"] for m in fake.bot_messages()))
    assert len(fake.identifies) == 1  # one gateway connection: the worker used REST only
    assert len(fake.calls_to("GET", "/users/@me")) == 2  # each process logged in once
