"""Citations from ``ReplyResult.citations`` rendered on Slack (``<url|title>``, the real deliver() against
the fake Slack), Discord (markdown links in angle brackets, embeds suppressed) and the terminal (plain
URLs; the terminal end to end is in test_turn.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.common.citations import shown_text, sources_plain
from adapters.common.stream import StreamRenderer
from adapters.discord.sink import ChannelSink
from adapters.slack.client import web_client
from adapters.slack.reply import ReplyOptions, render_reply
from core.types import Citation, ReplyDelta, ReplyDone, ReplyEvent, ReplyKind, ReplyResult
from tests.fakes.slack import FakeSlack

CITED = (
    Citation(1, "When do I get my refund?", "https://example.com/help/returns/refund-times"),
    Citation(3, "Return [policy]", "https://example.com/help/returns/return-policy"),
    Citation(4, "Internal notes", ""),
)
TEXT = "Refunds arrive within 5 working days [1], for unused items [3]."


async def _events() -> AsyncIterator[ReplyEvent]:
    yield ReplyDelta(TEXT[:20])
    yield ReplyDelta(TEXT[20:])
    yield ReplyDone(ReplyResult("turn-1", ReplyKind.ANSWER, TEXT, citations=CITED))


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.mark.parametrize("native", [False, True], ids=["post-and-edit", "native-stream"])
async def test_slack_links_each_source(slack: FakeSlack, native: bool) -> None:
    delivery = await render_reply(
        web_client(slack.bot_token, slack.api_url),
        _events(),
        channel="C1",
        thread_ts="1.000001",
        team_id="T0001",
        user_id="U1",
        options=ReplyOptions(native=native, min_interval=0.05, feedback=False),
        log_context={"conversation": "test"},
    )
    assert delivery.delivered
    (msg,) = slack.bot_messages("C1")
    assert msg.shown.startswith(TEXT)
    if native:  # chat.*Stream takes Markdown, which Slack renders as links
        assert "[1] [When do I get my refund?](https://example.com/help/returns/refund-times)" in msg.shown
    else:
        assert "[1] <https://example.com/help/returns/refund-times|When do I get my refund?>" in msg.shown
        assert "[3] <https://example.com/help/returns/return-policy|Return (policy)>" in msg.shown
        assert msg.params.get("unfurl_links") is False
    assert "[4] Internal notes" in msg.shown


class _Channel:
    """The part of discord.abc.Messageable the sink uses, recording what it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, content: str, **kwargs: Any) -> object:
        self.sent.append({"content": content, **kwargs})
        return object()


async def test_discord_links_suppress_embeds() -> None:
    channel = _Channel()
    renderer: StreamRenderer[Any] = StreamRenderer(ChannelSink(channel), min_interval=10)  # type: ignore[arg-type]
    outcome = await renderer.run(_events())
    assert outcome.result is not None and outcome.result.citations == CITED
    (post,) = channel.sent  # one post: the final text, sources included (no edit within the interval)
    assert post["suppress_embeds"] is True
    content = post["content"]
    assert content.startswith(TEXT)
    assert "[1] [When do I get my refund?](<https://example.com/help/returns/refund-times>)" in content
    assert "[3] [Return (policy)](<https://example.com/help/returns/return-policy>)" in content


def test_terminal_plain_urls() -> None:
    assert sources_plain(CITED) == (
        "Sources:\n"
        "  [1] When do I get my refund?: https://example.com/help/returns/refund-times\n"
        "  [3] Return (policy): https://example.com/help/returns/return-policy\n"
        "  [4] Internal notes"
    )


def test_no_citations_no_sources_line() -> None:
    plain = ReplyResult("t", ReplyKind.ANSWER, "Hello!")
    assert shown_text(plain) == "Hello!"
    assert sources_plain(()) == ""
