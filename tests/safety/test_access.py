"""Allow- and deny-lists, other bots, and the admins' /safety command (status, events, block, unblock)."""

from __future__ import annotations

from core.types import ReplyKind
from tests.safety.conftest import ModerationFake, SafetyFactory, make_turn


async def test_allow_and_deny_lists(safety_factory: SafetyFactory, fake_openai: ModerationFake) -> None:
    access = {
        "allow_workspaces": ["T1", "discord:G9"],
        "deny_channels": ["C_RANDOM"],
        "deny_users": ["slack:U_TROLL"],
    }
    async with safety_factory("support", access=access) as rt:
        ok = await rt.engine.collect(make_turn("hello"))
        other_ws = await rt.engine.collect(make_turn("hello", workspace="T2"))
        guild = await rt.engine.collect(make_turn("hello", platform="discord", workspace="G9"))
        slack_g9 = await rt.engine.collect(
            make_turn("hello", workspace="G9")
        )  # G9 is allowed on Discord only
        channel = await rt.engine.collect(make_turn("hello", channel="C_RANDOM"))
        troll = await rt.engine.collect(make_turn("hello", user="U_TROLL"))
        troll_discord = await rt.engine.collect(
            make_turn("hi", user="U_TROLL", platform="discord", workspace="G9")
        )
        other_bot = await rt.engine.collect(make_turn("hello", user="B1", bot=True))
    assert ok.kind is ReplyKind.ANSWER and guild.kind is ReplyKind.ANSWER
    assert troll_discord.kind is ReplyKind.ANSWER  # the deny entry names Slack
    denied = {
        "other_ws": (other_ws, "workspace_not_allowed"),
        "slack_g9": (slack_g9, "workspace_not_allowed"),
        "channel": (channel, "channel_denied"),
        "troll": (troll, "user_denied"),
        "other_bot": (other_bot, "bot_author"),
    }
    for name, (result, why) in denied.items():
        assert result.kind is ReplyKind.IGNORED and result.text == "", name  # ignored silently
        assert result.meta == {"reason": "access_denied", "access": why}, name
    assert len(fake_openai.chat_requests) == 3


async def test_safety_command_is_for_admins_only(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    async with safety_factory("arcade") as rt:
        refused = await rt.engine.collect(make_turn("/safety"))
        status = await rt.engine.collect(make_turn("/safety", admin=True))
    assert refused.kind is ReplyKind.REFUSAL and refused.text == "Only admins can use /safety."
    assert status.kind is ReplyKind.COMMAND and status.ephemeral
    assert "profile relaxed" in status.text and "fail-open" in status.text
    assert "user 5 per 10s, 60 per 3600s" in status.text


async def test_admins_block_and_unblock_a_user_and_read_the_events(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    fake_openai.scores = {"idiot": ("harassment", 0.99)}
    async with safety_factory("support") as rt:
        insult = await rt.engine.collect(make_turn("you idiot", user="U_RUDE"))
        block = await rt.engine.collect(make_turn("/safety block <@U_RUDE|rude>", admin=True, user="U_ADMIN"))
        ignored = await rt.engine.collect(make_turn("hello?", user="U_RUDE"))
        elsewhere = await rt.engine.collect(make_turn("hello?", user="U_RUDE", workspace="T2"))
        listing = await rt.engine.collect(make_turn("/safety blocked", admin=True))
        events = await rt.engine.collect(make_turn("/safety events 5", admin=True))
        unblock = await rt.engine.collect(make_turn("/safety unblock U_RUDE", admin=True))
        back = await rt.engine.collect(make_turn("hello!", user="U_RUDE"))
    assert insult.kind is ReplyKind.REFUSAL and insult.flag == "harassment"
    assert block.text.startswith("Blocked U_RUDE")
    assert ignored.kind is ReplyKind.IGNORED and ignored.meta["reason"] == "blocked"
    assert elsewhere.kind is ReplyKind.ANSWER  # a block is per workspace
    assert listing.text == "Blocked here: U_RUDE"
    assert "input harassment → refuse (user U_RUDE" in events.text and "idiot" not in events.text
    assert unblock.text == "Unblocked U_RUDE." and back.kind is ReplyKind.ANSWER


async def test_safety_status_shows_a_workspace_only_its_own_counters(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    fake_openai.scores = {"idiot": ("harassment", 0.99)}
    async with safety_factory("support") as rt:
        await rt.engine.collect(make_turn("you idiot", user="U_RUDE", workspace="T_ONE"))
        one = await rt.engine.collect(make_turn("/safety", admin=True, workspace="T_ONE"))
        other = await rt.engine.collect(make_turn("/safety", admin=True, workspace="T_OTHER"))
        endpoint = rt.safety.endpoint if rt.safety else None
    assert endpoint is not None
    assert "input:refuse:harassment=1" in one.text
    assert "harassment" not in other.text and "no moderation decisions recorded" in other.text
    for status in (one, other):
        assert endpoint.base_url not in status.text and "127.0.0.1" not in status.text
