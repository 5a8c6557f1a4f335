"""Slack payload -> Turn translation (pure functions, recorded-style payloads)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from adapters.slack.payloads import BlockActions, EventCallback, SlashCommand
from adapters.slack.translate import (
    FEEDBACK_DOWN,
    FEEDBACK_UP,
    BotIdentity,
    EventOptions,
    feedback_blocks,
    feedback_from_action,
    plain_text,
    section_blocks,
    thread_from_permalink,
    turn_from_command,
    turn_from_event,
)
from core.types import Place
from tests.fakes.slack import requests as rq

ME = BotIdentity(user_id="UBOT", bot_id="BBOT")

# A recorded app_mention envelope (Slack's documented shape, ids anonymised).
RECORDED_MENTION: dict[str, Any] = {
    "token": "ZZZZZZWSxiZZZ2yIvs3peJ",
    "team_id": "T061EG9R6",
    "api_app_id": "A0MDYCDME",
    "event": {
        "client_msg_id": "7b3c9bf2-1f0a-4a0e-9d3a-1f2a3b4c5d6e",
        "type": "app_mention",
        "user": "W021FGA1Z",
        "text": "<@UBOT> You can count on me to *reset* passwords &amp; more &lt;3",
        "ts": "1515449483.000108",
        "team": "T061EG9R6",
        "channel": "C0LAN2Q65",
        "event_ts": "1515449483000108",
    },
    "type": "event_callback",
    "event_id": "Ev0MDYHUEL",
    "event_time": 1515449483000108,
    "authed_users": ["U0LAN0Z89"],
}


def ev(payload: dict[str, Any]) -> EventCallback:
    return cast(EventCallback, payload)


def test_recorded_app_mention_becomes_threaded_turn() -> None:
    turn = turn_from_event(ev(RECORDED_MENTION), ME)
    assert turn is not None
    assert turn.place == Place("slack", "T061EG9R6", "C0LAN2Q65", "1515449483.000108")
    assert turn.addressed
    assert turn.author.id == "W021FGA1Z"
    assert turn.text == "You can count on me to *reset* passwords & more <3"
    assert turn.message_id == "1515449483.000108"
    assert turn.event_id == "C0LAN2Q65:1515449483.000108"


def test_mention_inside_thread_keeps_that_thread() -> None:
    turn = turn_from_event(ev(rq.app_mention("hi", thread_ts="111.000001", ts="111.000009")), ME)
    assert turn is not None
    assert turn.place.thread == "111.000001"


def test_retries_and_mention_twin_share_one_dedupe_id() -> None:
    mention = rq.app_mention("hi", ts="222.000001")
    twin = rq.message("<@UBOT> hi", ts="222.000001")  # the message.channels copy of the same message
    a, b = turn_from_event(ev(mention), ME), turn_from_event(ev(twin), ME)
    assert a is not None
    assert b is not None
    assert mention["event_id"] != twin["event_id"]
    assert a.event_id == b.event_id
    assert a.place == b.place


def test_top_level_dm_is_addressed_and_unthreaded() -> None:
    turn = turn_from_event(ev(rq.dm("where is my order?", ts="333.000001")), ME)
    assert turn is not None
    assert turn.addressed
    assert turn.place == Place("slack", "T0001", "D0DM", "")
    assert turn.text == "where is my order?"


def test_dm_in_thread_is_threaded() -> None:
    turn = turn_from_event(ev(rq.dm("more", ts="333.000009", thread_ts="333.000001")), ME)
    assert turn is not None
    assert turn.place.thread == "333.000001"


def test_thread_follow_up_without_mention_is_unaddressed_turn() -> None:
    payload = rq.message("and the refund?", ts="444.000005", thread_ts="444.000001")
    turn = turn_from_event(ev(payload), ME)
    assert turn is not None
    assert not turn.addressed
    assert turn.place.thread == "444.000001"
    assert turn_from_event(ev(payload), ME, EventOptions(follow_threads=False)) is None


def test_top_level_channel_chatter_is_ignored() -> None:
    assert turn_from_event(ev(rq.message("lunch anyone?")), ME) is None


@pytest.mark.parametrize(
    "payload",
    [
        rq.message("edited", subtype="message_changed"),
        rq.message("gone", subtype="message_deleted"),
        rq.message("joined", subtype="channel_join"),
        rq.dm("from me", user="UBOT"),
        rq.dm("bot says", user="", bot_id="BOTHER", subtype="bot_message"),
        rq.dm("our bot id", user="", bot_id="BBOT", subtype="bot_message"),
        rq.dm("bot with user", user="UOTHERBOT", bot_id="BOTHER"),
        rq.event_callback({"type": "reaction_added", "user": "U1"}),
    ],
)
def test_ignored_events(payload: dict[str, Any]) -> None:
    assert turn_from_event(ev(payload), ME) is None


def test_other_bots_can_be_answered_when_configured() -> None:
    opts = EventOptions(answer_bots=True)
    other = turn_from_event(ev(rq.dm("ping", user="", bot_id="BOTHER", subtype="bot_message")), ME, opts)
    assert other is not None
    assert other.author.is_bot
    assert other.author.id == "BOTHER"
    # ... but never ourselves
    assert turn_from_event(ev(rq.dm("x", user="", bot_id="BBOT", subtype="bot_message")), ME, opts) is None


def test_thread_broadcast_and_file_share_are_turns() -> None:
    assert turn_from_event(ev(rq.dm("also to channel", subtype="thread_broadcast")), ME) is not None
    assert turn_from_event(ev(rq.dm("see file", subtype="file_share")), ME) is not None


def test_admins_are_flagged() -> None:
    turn = turn_from_event(ev(rq.dm("hi", user="UADMIN")), ME, EventOptions(admins=frozenset({"UADMIN"})))
    assert turn is not None
    assert turn.author.is_admin


def test_workspace_falls_back_to_authorizations() -> None:
    payload = rq.dm("hi")
    del payload["team_id"]
    payload["authorizations"][0]["team_id"] = "T0AUTH"
    turn = turn_from_event(ev(payload), ME)
    assert turn is not None
    assert turn.place.workspace == "T0AUTH"


def test_plain_text_unwraps_slack_markup() -> None:
    text = (
        "<@UBOT> ask <@U1|ada> in <#C1|help> about <https://x.io/a|the doc> or <https://y.io> &amp; <!here>"
    )
    assert (
        plain_text(text, strip_user="UBOT")
        == "ask @ada in #help about the doc (https://x.io/a) or https://y.io & @here"
    )


def test_slash_command_becomes_command_turn() -> None:
    form = rq.slash_command("/support-story", "  a dragon  ", channel="C9", user="U7")
    turn = turn_from_command(cast(SlashCommand, form), {"/support-story": "story"})
    assert turn is not None
    assert turn.command is not None
    assert turn.command.name == "story"
    assert turn.command.args == "a dragon"
    assert turn.text == "/story a dragon"
    assert turn.place == Place("slack", "T0001", "C9", "")
    assert turn.event_id.startswith("cmd:")
    assert turn_from_command(cast(SlashCommand, form), {"/other": "story"}) is None


def test_feedback_click_parsed() -> None:
    payload = rq.block_action(FEEDBACK_DOWN, "turn123", channel="C5", message_ts="9.1", thread_ts="9.0")
    fb = feedback_from_action(cast(BlockActions, payload))
    assert fb is not None
    assert (fb.turn_id, fb.vote, fb.user_id, fb.message_ts) == ("turn123", "down", "U0USER", "9.1")
    assert fb.place == Place("slack", "T0001", "C5", "9.0")
    assert feedback_from_action(cast(BlockActions, rq.block_action("other", "x"))) is None


def test_feedback_blocks_carry_turn_id() -> None:
    (block,) = feedback_blocks("abc")
    elements = cast(list[dict[str, Any]], block["elements"])
    assert [e["action_id"] for e in elements] == [FEEDBACK_UP, FEEDBACK_DOWN]
    assert {e["value"] for e in elements} == {"abc"}


def test_section_blocks_respect_the_3000_char_limit() -> None:
    text = ("word " * 1000 + "\n\n```\n" + "x = 1\n" * 600 + "```\n") * 2
    blocks = section_blocks(text)
    parts = [cast(dict[str, str], b["text"])["text"] for b in blocks]
    assert len(parts) > 2
    assert all(len(p) <= 3000 for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)


def test_thread_from_permalink() -> None:
    link = "https://acme.slack.com/archives/C0LAN2Q65/p1515449483000108?thread_ts=1515449400.000001&cid=C0LAN2Q65"
    assert thread_from_permalink(link) == ("C0LAN2Q65", "1515449400.000001")
    assert thread_from_permalink("<https://acme.slack.com/archives/C1/p1515449483000108>") == (
        "C1",
        "1515449483.000108",
    )
    assert thread_from_permalink("not a link") is None
