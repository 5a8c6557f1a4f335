"""Human handoff in the support bot, through Slack: notice, silence in the thread, resume."""

from __future__ import annotations

import pytest

from bots.support.plugin import HANDOFF_LINE, HANDOFF_REPLY, asks_for_person, says_cannot_help
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.slack.conftest import ADMIN, SUPPORT_CHANNEL, Running, StartSlack, bot_config

ROOT = "1700000200.000100"


async def _ask_for_human(app: Running) -> None:
    await app.sender.event(rq.app_mention("can I talk to a human please?", ts=ROOT, user="U0CUST"))
    await app.settle()


async def _follow_up(app: Running, text: str, ts: str) -> None:
    await app.sender.event(rq.message(text, ts=ts, thread_ts=ROOT, user="U0CUST"))
    await app.settle()


async def _resumed(app: Running) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """What the console sees of the handoff (its inbox row's hash) and the audited resumes (source, user)."""
    rt = app.runtime
    assert rt.engine.stats is not None and rt.safety is not None
    handoff_keys = await rt.redis.keys(rt.keys.scoped("console", "handoff", "*"))
    (key,) = handoff_keys
    row = await rt.redis.hgetall(key)
    events = await rt.redis.xrange(rt.safety.events.stream)
    audited = [
        (e["source"], e["user"], e["detail"])
        for _id, e in events
        if (e["category"], e["action"]) == ("handoff", "resume")
    ]
    return row, audited


async def test_handoff_stops_auto_replies_until_resumed_by_button(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    await _ask_for_human(app)

    (reply,) = slack.bot_messages("C0GENERAL", ROOT)
    assert reply.shown == HANDOFF_REPLY
    assert reply.blocks == []  # no feedback buttons on a handoff
    assert fake_openai.chat_requests == []  # answered without the LLM
    (notice,) = slack.bot_messages(SUPPORT_CHANNEL)
    assert "<@U0CUST>" in notice.text
    assert f"archives/C0GENERAL/p{ROOT.replace('.', '')}" in notice.text
    button = notice.blocks[-1]["elements"][0]
    assert button["action_id"] == "parley_handoff_resume"

    await _follow_up(app, "hello? anyone?", "1700000200.000200")
    await app.sender.event(
        rq.app_mention("still there?", ts="1700000200.000300", thread_ts=ROOT, user="U0CUST")
    )
    await app.settle()
    assert len(slack.bot_messages("C0GENERAL", ROOT)) == 1  # silent while a person handles it
    assert fake_openai.chat_requests == []

    def click(user: str, rid: str) -> dict[str, object]:
        return rq.block_action(
            "parley_handoff_resume",
            button["value"],
            user=user,
            channel=SUPPORT_CHANNEL,
            message_ts=notice.ts,
            response_url=slack.response_url(rid),
        )

    # Anyone who can see the notice can press the button; only an admin resumes the bot (as with /resume).
    assert (await app.sender.action(click("U0CUST", "denied"))).status == 200
    await app.settle()
    await _follow_up(app, "did that work?", "1700000200.000350")
    assert fake_openai.chat_requests == []  # still paused
    ((rid, body),) = slack.responses
    assert (rid, body["response_type"]) == ("denied", "ephemeral")
    assert body["text"].startswith("Only admins can resume")

    assert (await app.sender.action(click(ADMIN, "notice"))).status == 200
    await app.settle()
    rid, body = slack.responses[-1]
    assert rid == "notice"
    assert body["replace_original"] is True
    assert f"<@{ADMIN}> resumed" in body["text"]
    # The one resume: the console's inbox marks the handoff resumed, and who did it is audited.
    row, audited = await _resumed(app)
    assert row["resumed_by"] == ADMIN and float(row["resumed"]) > 0
    assert audited == [("button", ADMIN, f"button: {ADMIN}")]

    await _follow_up(app, "thanks, one more question", "1700000200.000400")
    assert slack.bot_messages("C0GENERAL", ROOT)[-1].shown == "You said: thanks, one more question"
    # What was said during the handoff is in the bot's memory when it takes over again.
    history = [m["content"] for m in fake_openai.chat_requests[-1].body["messages"]]
    assert "hello? anyone?" in history


async def test_model_that_cannot_help_hands_off(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    fake_openai.queue(Reply(f"Our reference does not cover lost customs forms.\n\n{HANDOFF_LINE}"))
    await app.sender.event(rq.app_mention("my customs form is lost", ts=ROOT, user="U0CUST"))
    await app.settle()
    assert len(slack.bot_messages(SUPPORT_CHANNEL)) == 1

    await _follow_up(app, "ok waiting", "1700000200.000500")
    assert len(fake_openai.chat_requests) == 1
    assert len(slack.bot_messages("C0GENERAL", ROOT)) == 1


async def test_resume_by_link_is_for_admins(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    await _ask_for_human(app)
    link = f"https://acme.slack.com/archives/C0GENERAL/p{ROOT.replace('.', '')}"

    await app.sender.command(
        rq.slash_command("/resume", link, user="U0CUST", response_url=slack.response_url("a"))
    )
    await app.settle()
    await _follow_up(app, "ignored still", "1700000200.000600")
    assert fake_openai.chat_requests == []  # a customer cannot resume the bot

    await app.sender.command(
        rq.slash_command("/resume", link, user=ADMIN, response_url=slack.response_url("b"))
    )
    await app.settle()
    assert [(rid, body["response_type"]) for rid, body in slack.responses] == [
        ("a", "ephemeral"),
        ("b", "ephemeral"),
    ]
    assert slack.responses[0][1]["text"] == "Only admins can use /resume."
    assert slack.responses[1][1]["text"].startswith("Done")
    row, audited = await _resumed(app)
    assert row["resumed_by"] == ADMIN
    assert audited == [("command", ADMIN, f"command: {ADMIN}")]

    await _follow_up(app, "back again", "1700000200.000700")
    assert slack.bot_messages("C0GENERAL", ROOT)[-1].shown == "You said: back again"


async def test_handoff_without_support_channel_still_pauses(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack(config=bot_config(handoff_channel=""))
    await _ask_for_human(app)
    assert slack.bot_messages(SUPPORT_CHANNEL) == []
    await _follow_up(app, "hello?", "1700000200.000800")
    assert fake_openai.chat_requests == []


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("Can I talk to a human?", True),
        ("human", True),
        ("Agent please!", True),
        ("please connect me to someone", True),
        ("I'd like a real person", True),
        ("escalate this", True),
        ("speak with your supervisor", True),
        ("how do I talk to my bank?", False),
        ("what does a human resources team do", False),
        ("I need the manager approval form", False),
        ("where is my order?", False),
    ],
)
def test_asks_for_person(text: str, wanted: bool) -> None:
    assert asks_for_person(text) is wanted


def test_says_cannot_help() -> None:
    assert says_cannot_help("Sorry.\n\nI’ll ask a colleague to follow up here.")
    assert says_cannot_help("Sorry. *I'll ask a colleague to follow up here*")
    assert not says_cannot_help("Refunds take 5 working days.")
