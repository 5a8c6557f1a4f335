"""Flagged turns are reported to the moderators' channel: end to end against the fake Discord, with the
arcade bot's relaxed moderation profile (the fake moderation endpoint scores "harassment" at 0.97, above the
profile's 0.8, and the profile flags that category rather than refusing it)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

from adapters.common.deps import EdgeDeps
from adapters.common.flags import EXCERPT_CHARS, excerpt, flag_report
from adapters.discord.delivery import DiscordDelivery
from adapters.discord.notice import flag_notice, jump_url, origin_of
from adapters.discord.route import ChannelTarget, InteractionTarget, Origin, route_for, target_of
from core.moderation import Action
from core.ops.jobs import Job
from core.safety.profiles import BUILTIN_PROFILES
from core.types import (
    Author,
    CommandCall,
    Place,
    ReplyDelta,
    ReplyDone,
    ReplyEvent,
    ReplyKind,
    ReplyResult,
    Turn,
)
from tests.conftest import RuntimeFactory
from tests.discord.conftest import BotFactory, assert_mention_safe, discord_settings, gateway_and_worker
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply

INSULT = "you absolute noob"  # the fake moderation endpoint flags text containing it as harassment
EMAIL = "alice.smith@example.com"  # no Markdown characters: escaping cannot hide a failed redaction
ANSWER = "Rough words, rookie! Here is a riddle instead."
PINGS = re.compile(r"@(everyone|here)|<@[!&]?\d+>")


def notices(fake: FakeDiscord, *, ok: bool | None = True) -> list[Any]:
    return fake.calls_to("POST", rf"/channels/{fake.mods['id']}/messages", ok=ok)


def mods_id(fake: FakeDiscord) -> int:
    return int(fake.mods["id"])


@pytest.fixture(autouse=True)
def _flag_insults(fake_openai: FakeOpenAI) -> None:
    fake_openai.flagged_words = {INSULT}


def test_the_arcade_profile_flags_harassment_rather_than_refusing_it() -> None:
    # The premise of these tests: a change to the relaxed profile should fail here, not mysteriously below.
    relaxed = BUILTIN_PROFILES["relaxed"]
    assert relaxed.action("input", "harassment") is Action.FLAG
    assert relaxed.thresholds["harassment"] < 0.97


async def test_a_flagged_message_is_reported_once_with_a_redacted_excerpt(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.queue(Reply(ANSWER))
    text = f"{INSULT}, mail me at {EMAIL} and tell @everyone"
    with structlog.testing.capture_logs() as logs:
        async with bot_factory(moderators_channel_id=mods_id(fake)):
            asked = await fake.send_message(text, mention_bot=True)
            await fake.wait_for(lambda: notices(fake))
            await fake.wait_for(lambda: fake.bot_messages(fake.general["id"])[-1]["content"] == ANSWER)
            await asyncio.sleep(0.3)  # a second notice would have arrived by now
    (notice,) = notices(fake, ok=None)
    content = notice.json["content"]
    (reported,) = [e for e in logs if e["event"] == "discord_flag_reported"]
    assert reported["category"] == "harassment"
    assert "Flagged: harassment" in content
    assert f"`{reported['turn_id']}`" in content
    assert f"Alice (user id {fake.alice['id']})" in content
    assert f"<@{fake.alice['id']}>" not in content  # who, as plain text
    assert f"Arcade Hall › #general (guild {fake.guild_id}, channel {fake.general['id']})" in content
    assert jump_url(int(fake.guild_id), int(fake.general["id"]), int(asked["id"])) in content
    assert "you absolute noob, mail me at [redacted email] and tell" in content
    assert EMAIL not in content and "example.com" not in content
    assert not PINGS.search(content), content  # the excerpt's @everyone is neutralised in the text too
    mentions = notice.json["allowed_mentions"]
    assert mentions["parse"] == [] and not mentions.get("users") and not mentions.get("roles")
    assert notice.json["flags"] & 4  # SUPPRESS_EMBEDS
    assert fake.pings == []
    # The user still got their answer, as a reply to their message.
    (reply,) = fake.calls_to("POST", rf"/channels/{fake.general['id']}/messages")
    assert str(reply.json["message_reference"]["message_id"]) == asked["id"]


async def test_unflagged_messages_post_nothing_to_the_moderators(
    bot_factory: BotFactory, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    async with bot_factory(moderators_channel_id=mods_id(fake)):
        await fake.send_message("a friendly riddle, please", mention_bot=True)
        await fake.wait_for(lambda: fake.bot_messages(fake.general["id"]))
        await asyncio.sleep(0.3)
    assert not notices(fake, ok=None)


async def test_without_a_moderators_channel_flags_are_logged_once_and_the_bot_keeps_answering(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.queue(Reply(ANSWER), Reply(ANSWER + " Again."))
    with structlog.testing.capture_logs() as logs:
        async with bot_factory():
            await fake.send_message(f"{INSULT} one", mention_bot=True)
            await fake.wait_for(lambda: fake.bot_messages(fake.general["id"]))
            await fake.send_message(f"{INSULT} two", mention_bot=True)
            await fake.wait_for(lambda: len(fake.bot_messages(fake.general["id"])) == 2)
            await fake.wait_for(
                lambda: fake.bot_messages(fake.general["id"])[-1]["content"] == ANSWER + " Again."
            )
            await fake.send_message("and a plain question", mention_bot=True)
            await fake.wait_for(lambda: len(fake.bot_messages(fake.general["id"])) == 3)
    posted = {c.path for c in fake.calls_to("POST", r"/channels/\d+/messages")}
    assert posted == {f"/channels/{fake.general['id']}/messages"}  # answers only, no notice anywhere
    unrouted = [e for e in logs if e["event"] == "discord_flags_unrouted"]
    assert len(unrouted) == 1
    assert unrouted[0]["log_level"] == "warning"
    assert "DISCORD_MODERATORS_CHANNEL_ID" in unrouted[0]["detail"]


@pytest.mark.parametrize(("status", "error_code"), [(403, 50013), (404, 10003)])
async def test_a_refused_notice_is_logged_and_the_reply_still_delivered(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI, status: int, error_code: int
) -> None:
    fake = fake_discord
    fake.inject("POST", rf"/channels/{fake.mods['id']}/messages", status, times=10)
    fake_openai.queue(Reply(ANSWER))
    with structlog.testing.capture_logs() as logs:
        async with bot_factory(moderators_channel_id=mods_id(fake)):
            await fake.send_message(f"{INSULT}!", mention_bot=True)
            await fake.wait_for(lambda: any(e["event"] == "discord_flag_notice_failed" for e in logs))
            await fake.wait_for(lambda: fake.bot_messages(fake.general["id"])[-1]["content"] == ANSWER)
            # Still alive: the next turn is answered.
            await fake.send_message("still here?", mention_bot=True)
            await fake.wait_for(
                lambda: fake.bot_messages(fake.general["id"])[-1]["content"] == "You said: still here?"
            )
    (failed,) = [e for e in logs if e["event"] == "discord_flag_notice_failed"]
    assert failed["log_level"] == "warning"
    assert failed["status"] == status and failed["code"] == error_code
    assert failed["category"] == "harassment"
    assert failed["conversation"] == f"discord:{fake.guild_id}:{fake.general['id']}:"
    assert failed["moderators_channel"] == fake.mods["id"]
    assert not any(e["event"] == "discord_delivery_failed" for e in logs)
    assert len(notices(fake, ok=False)) == 1  # tried once, not retried into more 403s


async def test_a_workers_only_process_reports_what_the_gateway_process_queued(
    runtime_factory: RuntimeFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    """The gateway process puts where the user asked (their message, guild and channel names) in the
    queued route; the worker writes the notice from that alone. With ``open_threads`` the reply goes to a
    new thread, but the jump link still points at the user's message in the channel."""
    fake = fake_discord
    settings = discord_settings(fake, moderators_channel_id=mods_id(fake), open_threads=True)
    fake_openai.queue(Reply(ANSWER))
    async with gateway_and_worker(runtime_factory, settings):
        asked = await fake.send_message(f"{INSULT}, write to {EMAIL}", mention_bot=True)
        await fake.wait_for(lambda: notices(fake))
        await fake.wait_for(lambda: fake.bot_messages(asked["id"]))  # the thread took the message's id
        await fake.wait_for(lambda: fake.bot_messages(asked["id"])[-1]["content"] == ANSWER)
    (notice,) = notices(fake)
    content = notice.json["content"]
    assert jump_url(int(fake.guild_id), int(fake.general["id"]), int(asked["id"])) in content
    assert "Arcade Hall › #general" in content
    assert "[redacted email]" in content and EMAIL not in content
    assert len(fake.identifies) == 1  # the worker used REST only
    assert_mention_safe(fake)


async def test_a_flagged_slash_command_is_reported_without_a_jump_link(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.queue(Reply("Once upon a time, two rivals made peace."))
    async with bot_factory(moderators_channel_id=mods_id(fake)):
        await fake.slash("story", {"prompt": f"{INSULT} meets a rival"})
        await fake.wait_for(lambda: notices(fake))
    content = notices(fake)[0].json["content"]
    assert "Flagged: harassment" in content
    assert "Command: /story" in content
    assert f"{INSULT} meets a rival" in content
    assert "discord.com/channels" not in content  # a slash command has no user message to link to


# ---------------------------------------------------------------------------------- the Delivery port


def _job(fake: FakeDiscord, text: str) -> Job:
    turn = Turn(
        author=Author(fake.alice["id"], "Alice"),
        place=Place("discord", fake.guild_id, fake.general["id"]),
        text=text,
    )
    target = ChannelTarget(int(fake.general["id"]), int(fake.guild_id), None, typing=False)
    return Job(turn, route_for(target))


async def _stream(result: ReplyResult) -> AsyncIterator[ReplyEvent]:
    if result.text:
        yield ReplyDelta(result.text)
    yield ReplyDone(result)


@pytest.mark.parametrize(
    ("kind", "reported"),
    [
        (ReplyKind.ANSWER, True),
        (ReplyKind.REFUSAL, True),  # profiles with flag_refusals report refusals too
        (ReplyKind.COMMAND, True),
        (ReplyKind.IGNORED, False),
    ],
)
async def test_ignored_results_never_post_a_notice(
    runtime_factory: RuntimeFactory, fake_discord: FakeDiscord, kind: ReplyKind, reported: bool
) -> None:
    fake = fake_discord
    settings = discord_settings(fake, moderators_channel_id=mods_id(fake))
    async with runtime_factory("arcade") as rt:
        delivery = DiscordDelivery(EdgeDeps.of(rt), settings)
        try:
            job = _job(fake, "some words")
            text = "" if kind is ReplyKind.IGNORED else "shown"
            result = ReplyResult(job.turn.turn_id, kind, text, flag="violence")
            await delivery.deliver(job, _stream(result))
        finally:
            await delivery.aclose()
    assert len(notices(fake, ok=None)) == (1 if reported else 0)
    assert_mention_safe(fake)


# ---------------------------------------------------------------------------------- pure parts


def test_the_excerpt_is_redacted_before_it_is_cut() -> None:
    def redact(text: str) -> str:
        return text.replace(EMAIL, "[redacted email]")

    # The address straddles the cut: cutting first would leave "alice.smi..." for the redactor to miss.
    text = "x" * (EXCERPT_CHARS - 10) + " " + EMAIL + " and more"
    out = excerpt(text, redact)
    assert len(out) == EXCERPT_CHARS
    assert out.endswith("…")
    assert "alice" not in out
    assert excerpt("  short  ", None) == "short"


def test_the_notice_is_plain_text_and_mention_safe() -> None:
    turn = Turn(
        author=Author("42", "**@everyone**"),
        place=Place("discord", "@me", "7"),
        text="/story",
        command=CommandCall("story"),
    )
    result = ReplyResult(turn.turn_id, ReplyKind.ANSWER, "ok", flag="violence")
    report = flag_report(turn, result, lambda text: "# shout\n[click](https://evil.example) <@123> @here")
    assert report is not None and report.command == "story"
    content = flag_notice(report, guild_id=None, origin=Origin(7, 9))
    assert not PINGS.search(content), content
    assert "user id 42" in content
    assert "Where: DM (channel 7)" in content
    assert "Message: https://discord.com/channels/@me/7/9" in content
    assert "> \\# shout" in content  # Markdown shown as typed, inside a quote
    assert "\\[click]" in content  # a masked link cannot disguise where it goes
    assert "**@" not in content


def test_routes_carry_the_origin_through_the_queue() -> None:
    origin = Origin(5, 6, "Arcade Hall", "general")
    channel = ChannelTarget(1, 2, None, typing=True, origin=origin)
    interaction = InteractionTarget(9, 8, 7, 6, 5, deadline=1.0, origin=Origin(6, None, "Hall", "x"))
    assert target_of(route_for(channel)) == channel
    assert target_of(route_for(interaction)) == interaction
    # A route without an origin (queued by an older version) still leads to the user's message.
    assert origin_of(target_of(route_for(ChannelTarget(1, 2, 3)))) == Origin(1, 3)
    assert origin_of(InteractionTarget(9, 8, 7, 6, 5, deadline=1.0)) == Origin(6, None)


# ---------------------------------------------------------------------------------- handoff


@pytest.mark.parametrize("mods", [True, False], ids=["moderators-channel", "no-channel"])
async def test_a_handoff_is_announced_on_discord(
    runtime_factory: RuntimeFactory, fake_discord: FakeDiscord, mods: bool
) -> None:
    """Issue 18: Discord showed no handoff notice (only Slack did). With a moderators' channel the people who
    take over are told there, with a link; without one, the conversation itself says so."""
    fake = fake_discord
    extra = {"moderators_channel_id": mods_id(fake)} if mods else {}
    async with runtime_factory("arcade") as rt:
        delivery = DiscordDelivery(EdgeDeps.of(rt), discord_settings(fake, **extra))
        try:
            job = _job(fake, "can I talk to a person?")
            result = ReplyResult(
                job.turn.turn_id, ReplyKind.ANSWER, "A colleague will take over.", handoff=True
            )
            await delivery.deliver(job, _stream(result))
        finally:
            await delivery.aclose()
    if mods:
        (notice,) = notices(fake, ok=None)
        assert "Handoff" in notice.json["content"] and fake.alice["id"] in notice.json["content"]
    else:
        said = [m["content"] for m in fake.bot_messages(fake.general["id"])]
        assert said[0] == "A colleague will take over." and "handed this conversation to a person" in said[1]
    assert_mention_safe(fake)
