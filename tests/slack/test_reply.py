"""``render_reply()`` alone: whatever the engine streams, Slack gets safe, sized, well-formed messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.slack.client import web_client
from adapters.slack.mrkdwn import WORD_JOINER
from adapters.slack.reply import Rendered, ReplyOptions, render_reply
from core.types import ReplyDelta, ReplyDone, ReplyEvent, ReplyKind, ReplyReplace, ReplyResult
from tests.fakes.slack import FakeSlack

HOSTILE = "Attention <!channel> <!here> <!everyone> @here @everyone: ask <@U0BOSS> or <!subteam^S1|@team>. "


async def _stream(
    text: str, *, kind: ReplyKind = ReplyKind.ANSWER, step: int = 25, pause: float = 0.0
) -> AsyncIterator[ReplyEvent]:
    for i in range(0, len(text), step):
        if pause:
            await asyncio.sleep(pause)
        yield ReplyDelta(text[i : i + step])
    yield ReplyDone(ReplyResult("turn-1", kind, text))


async def _render(
    slack: FakeSlack, events: AsyncIterator[ReplyEvent], *, native: bool, thread: str = "1.000001"
) -> Rendered:
    return await render_reply(
        web_client(slack.bot_token, slack.api_url),
        events,
        channel="C1",
        thread_ts=thread,
        team_id="T0001",
        user_id="U1",
        options=ReplyOptions(native=native, min_interval=0.05),
        log_context={"conversation": "test"},
    )


@pytest.mark.parametrize("native", [True, False])
async def test_no_control_sequence_reaches_slack(slack: FakeSlack, native: bool) -> None:
    delivery = await _render(slack, _stream(HOSTILE * 3), native=native)
    assert delivery.delivered
    assert delivery.native is native
    (msg,) = slack.bot_messages("C1")
    for ping in ("<!channel>", "<!here>", "<!everyone>", "<@U0BOSS>", "<!subteam", "@here", "@everyone"):
        assert ping not in msg.shown
    assert "@" + WORD_JOINER + "everyone" in msg.shown
    for call in slack.calls_to(
        "chat.postMessage", "chat.startStream", "chat.appendStream", "chat.stopStream"
    ):
        sent = str(call.params.get("text", "")) + str(call.params.get("markdown_text", ""))
        assert "<!" not in sent
        assert "<@" not in sent


async def test_native_stream_appends_only_whole_words(slack: FakeSlack) -> None:
    text = "Streaming answers arrive word by word, never cut inside a word. " * 5
    delivery = await _render(slack, _stream(text, step=7, pause=0.01), native=True)
    assert delivery.native
    pieces = [
        str(c.params.get("markdown_text") or "")
        for c in slack.calls_to("chat.startStream", "chat.appendStream")
    ]
    assert len(pieces) >= 2
    assert all(p.endswith((" ", "\n")) for p in pieces)
    (msg,) = slack.bot_messages("C1")
    assert msg.shown == text
    assert msg.blocks[-1]["type"] == "actions"  # feedback buttons, added when the stream stops


async def test_replacement_after_streaming_hands_over_to_edits(slack: FakeSlack) -> None:
    async def events() -> AsyncIterator[ReplyEvent]:
        yield ReplyDelta("Something we will take back soon enough. ")
        yield ReplyDelta("More of it, then more. ")
        yield ReplyReplace("Sorry, I can't help with that.")
        yield ReplyDone(ReplyResult("turn-1", ReplyKind.REFUSAL, "Sorry, I can't help with that."))

    delivery = await _render(slack, events(), native=True)
    (msg,) = slack.bot_messages("C1")
    assert msg.text == "Sorry, I can't help with that."
    assert not msg.streaming
    methods = [c.method for c in slack.calls if c.method.startswith("chat.")]
    assert methods.index("chat.stopStream") < methods.index("chat.update")  # never update while streaming
    assert delivery.result is not None
    assert delivery.result.kind is ReplyKind.REFUSAL
    assert msg.blocks == []


async def test_top_level_reply_is_never_streamed_natively(slack: FakeSlack) -> None:
    delivery = await _render(slack, _stream("A DM answer."), native=True, thread="")
    assert not delivery.native
    assert not slack.calls_to("chat.startStream")
    (msg,) = slack.bot_messages("C1")
    assert msg.thread_ts == ""


async def test_ignored_turn_posts_nothing(slack: FakeSlack) -> None:
    async def events() -> AsyncIterator[ReplyEvent]:
        yield ReplyDone(ReplyResult("turn-1", ReplyKind.IGNORED, ""))

    delivery = await _render(slack, events(), native=True)
    assert delivery.delivered
    assert delivery.messages == []
    assert [c.method for c in slack.calls] == []
