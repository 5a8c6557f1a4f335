"""Flagged turns are reported to the moderators' channel: end to end against the fake Slack.

The support bot runs the strict profile: the fake moderation endpoint scores text containing ``INSULT`` as
harassment (0.97), which strict refuses and, with ``flag_refusals``, flags. An answered-and-flagged turn
comes from a block-list pattern whose category is configured with the ``flag`` action.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

from adapters.common.deps import EdgeDeps
from adapters.common.flags import EXCERPT_CHARS, FlagReport
from adapters.slack.app import SlackAdapter
from adapters.slack.delivery import SlackDelivery
from adapters.slack.flags import notice_text
from adapters.slack.route import route_for, target_for
from adapters.slack.settings import Mode, SlackBotConfig, load_slack_settings, parse_bot_config
from core.bot import BotSpec
from core.errors import ConfigError
from core.moderation import Action
from core.ops.jobs import Job
from core.ops.service import serve
from core.safety.profiles import BUILTIN_PROFILES
from core.types import (
    Attachment,
    Audience,
    Author,
    Notice,
    Place,
    ReplyDelta,
    ReplyDone,
    ReplyEvent,
    ReplyKind,
    ReplyResult,
    Turn,
)
from tests.conftest import RuntimeFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack import FakeSlack, Message, SlackSender
from tests.fakes.slack import requests as rq
from tests.slack.conftest import (
    RUNTIME,
    SIGNING_SECRET,
    StartSlack,
    bot_config,
    eventually,
    slack_settings,
    support_spec,
)

MODS = "C0MODS"
CUSTOMER = "U0CUST"
INSULT = "you useless tin can"  # the fake moderation endpoint flags text containing it as harassment
EMAIL = "alice.smith@example.com"
ROOT = "1700000300.000100"
# Anything in a Slack message that pings or links on its own: <@U…>, <!here>, <#C…>, <!subteam^…>, <url>,
# and the bare broadcast words.
CONTROL = re.compile(r"<[@!#]|<(?!https://acme\.slack\.com/archives/)[a-z]+:|@(here|channel|everyone)\b")


@pytest.fixture(autouse=True)
def _flag_insults(fake_openai: FakeOpenAI) -> None:
    fake_openai.flagged_words = {INSULT}


def mods_config(**overrides: Any) -> SlackBotConfig:
    return bot_config(moderators_channel=MODS, **overrides)


def notices(slack: FakeSlack) -> list[Message]:
    return slack.bot_messages(MODS)


def codename_spec() -> BotSpec:
    """The support bot with a block-list category that is flagged, not refused: answered and flagged."""
    spec = support_spec()
    moderation = spec.config.moderation.model_copy(
        update={
            "blocked_patterns": [r"\bproject\s+falcon\b"],
            "blocked_category": "codename",
            "actions": {"codename": "flag"},
        }
    )
    return dataclasses.replace(spec, config=spec.config.model_copy(update={"moderation": moderation}))


def test_the_support_profile_refuses_and_flags_harassment() -> None:
    # The premise of the end-to-end tests: a change to the strict profile should fail here first.
    strict = BUILTIN_PROFILES["strict"]
    assert strict.action("input", "harassment") is Action.REFUSE
    assert strict.flag_refusals
    assert strict.thresholds["harassment"] < 0.97


async def test_a_flagged_message_is_reported_once_with_a_redacted_excerpt(
    start_slack: StartSlack, slack: FakeSlack
) -> None:
    slack.add_user(CUSTOMER, display_name="Cust *Omer*", real_name="Customer One")
    text = f"{INSULT}! mail me at {EMAIL} <!here> <@U0OTHER> <#C0SECRET|secret> <https://evil.example>"
    with structlog.testing.capture_logs() as logs:
        app = await start_slack(config=mods_config())
        await app.sender.event(rq.app_mention(text, ts=ROOT, user=CUSTOMER))
        await app.settle()

    (reply,) = slack.bot_messages("C0GENERAL", ROOT)
    assert reply.shown == support_spec().persona(None).refusal  # the customer is refused as usual
    (notice,) = notices(slack)
    (posted,) = [e for e in logs if e["event"] == "slack_flag_notice"]
    body = notice.text
    assert "Moderation flag: *harassment* (refused)" in body
    assert f"Turn: {posted['turn_id']}" in body
    assert f"Who: Cust *Omer* ({CUSTOMER})" in body  # display name and id as plain text
    link = f"https://acme.slack.com/archives/C0GENERAL/p{ROOT.replace('.', '')}"
    assert f"Where: C0GENERAL, <{link}|the message>" in body
    assert "[redacted email]" in body
    assert EMAIL not in body and "alice" not in body
    assert f">{INSULT}!" in body  # the user's words, quoted
    assert not CONTROL.search(body), body  # no ping, no Slack link syntax but the permalink
    assert "@\u2060here" in body  # the broadcast word is shown, broken
    assert notice.params["unfurl_links"] is False
    assert notice.params["unfurl_media"] is False
    assert notice.blocks == []
    permalinks = slack.calls_to("chat.getPermalink")
    assert [c.params["message_ts"] for c in permalinks] == [ROOT]


async def test_unflagged_messages_post_nothing_to_the_moderators(
    start_slack: StartSlack, slack: FakeSlack
) -> None:
    app = await start_slack(config=mods_config())
    await app.sender.event(rq.app_mention("where is my parcel?", ts=ROOT, user=CUSTOMER))
    await app.settle()
    assert slack.bot_messages("C0GENERAL", ROOT)[0].shown == "You said: where is my parcel?"
    assert notices(slack) == []
    assert slack.calls_to("chat.getPermalink") == []


async def test_without_a_moderators_channel_flags_are_logged_once_and_the_bot_keeps_answering(
    start_slack: StartSlack, slack: FakeSlack
) -> None:
    with structlog.testing.capture_logs() as logs:
        app = await start_slack(config=bot_config())  # moderators_channel unset
        for n, words in enumerate((f"{INSULT} one", f"{INSULT} two", "a plain question")):
            await app.sender.event(rq.app_mention(words, ts=f"1700000301.00010{n}", user=CUSTOMER))
            await app.settle()

    refusal = support_spec().persona(None).refusal
    shown = [m.shown for m in slack.bot_messages()]
    assert shown == [refusal, refusal, "You said: a plain question"]  # answers only, no notice anywhere
    assert {m.channel for m in slack.bot_messages()} == {"C0GENERAL"}
    unrouted = [e for e in logs if e["event"] == "slack_flag_without_channel"]
    assert len(unrouted) == 1
    assert unrouted[0]["log_level"] == "warning"
    assert unrouted[0]["category"] == "harassment"
    assert "SLACK_MODERATORS_CHANNEL" in unrouted[0]["hint"]


async def test_the_environment_sets_the_moderators_channel(start_slack: StartSlack, slack: FakeSlack) -> None:
    app = await start_slack(config=bot_config(), slack_moderators_channel="C0ENVMODS")
    await app.sender.event(rq.app_mention(INSULT, ts=ROOT, user=CUSTOMER))
    await app.settle()
    assert len(slack.bot_messages("C0ENVMODS")) == 1


async def test_a_refused_notice_is_logged_and_the_bot_keeps_answering(
    start_slack: StartSlack, slack: FakeSlack
) -> None:
    slack.closed_channels.add(MODS)  # the bot was never invited to the moderators' channel
    with structlog.testing.capture_logs() as logs:
        app = await start_slack(config=mods_config())
        await app.sender.event(rq.app_mention(INSULT, ts=ROOT, user=CUSTOMER))
        await app.settle()
        await app.sender.event(rq.app_mention("still there?", ts="1700000302.000100", user=CUSTOMER))
        await app.settle()

    assert slack.bot_messages("C0GENERAL")[-1].shown == "You said: still there?"
    (failed,) = [e for e in logs if e.get("via") == "flag_notice"]
    assert failed["event"] == "reply_undeliverable"
    assert failed["log_level"] == "error"
    assert failed["error"] == "not_in_channel"
    assert failed["conversation"] == f"slack:T0001:C0GENERAL:{ROOT}"
    assert not [e for e in logs if e["event"] == "slack_flag_notice"]


async def test_a_workers_only_process_reports_what_the_adapter_queued(
    runtime_factory: RuntimeFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    """The adapter process only acks and queues; a worker process (its own runtime, a Delivery and no
    adapter) answers and writes the notice from the queued job alone. This turn is answered *and* flagged."""
    slack.add_user(CUSTOMER, display_name="Cust")
    config = mods_config()
    settings = slack_settings(slack)
    spec = codename_spec()
    stop = asyncio.Event()
    async with (
        runtime_factory(spec=spec, parley_queue=True, **RUNTIME) as front_rt,
        runtime_factory(spec=spec, parley_queue=True, **RUNTIME) as worker_rt,
    ):
        front_deps = EdgeDeps.of(front_rt)
        front_delivery = SlackDelivery(front_deps, settings, config)
        front_rt.ops.deliveries.register("slack", front_delivery)
        adapter = SlackAdapter(front_deps, settings, config, Mode.HTTP, front_delivery)
        worker_delivery = SlackDelivery(EdgeDeps.of(worker_rt), settings, config)
        worker_rt.ops.deliveries.register("slack", worker_delivery)
        front = asyncio.create_task(
            serve(front_rt, [("slack", adapter)], workers=False, stop=stop, handle_signals=False)
        )
        worker = asyncio.create_task(serve(worker_rt, [], workers=True, stop=stop, handle_signals=False))
        try:
            await asyncio.wait_for(adapter.ready.wait(), 10)
            url = f"http://127.0.0.1:{adapter.port}/slack/events"
            async with SlackSender(url, SIGNING_SECRET) as sender:
                text = f"what is project falcon? write to {EMAIL}"
                await sender.event(rq.app_mention(text, ts=ROOT, user=CUSTOMER))
                await slack.wait_for(lambda: bool(notices(slack)), within=10)
                await eventually(lambda: worker_delivery.delivered == 1)
        finally:
            stop.set()
            await asyncio.gather(front, worker, return_exceptions=True)
            await adapter.aclose()

    (reply,) = slack.bot_messages("C0GENERAL", ROOT)
    assert reply.shown.startswith("You said: what is project falcon?")  # answered, not refused
    (notice,) = notices(slack)
    assert "Moderation flag: *codename* (answered)" in notice.text
    assert f"Who: Cust ({CUSTOMER})" in notice.text  # the name came with the job
    assert "archives/C0GENERAL/p" in notice.text
    assert "[redacted email]" in notice.text and EMAIL not in notice.text
    assert front_delivery.delivered == 0 and worker_delivery.flag_notices == 1
    assert len(slack.attempts("users.info")) == 1  # looked up once, by the adapter process


# ---------------------------------------------------------------------------------- the Delivery port


def _job(text: str, *, message_ts: str = ROOT) -> Job:
    turn = Turn(
        author=Author(CUSTOMER, "Cust"),
        place=Place("slack", "T0001", "C0GENERAL", ROOT),
        text=text,
        message_id=message_ts,
    )
    return Job(turn, route_for(target_for(turn)))


async def _stream(result: ReplyResult) -> AsyncIterator[ReplyEvent]:
    if result.text:
        yield ReplyDelta(result.text)
    yield ReplyDone(result)


@pytest.mark.parametrize(
    ("kind", "reported"),
    [
        (ReplyKind.ANSWER, True),
        (ReplyKind.REFUSAL, True),
        (ReplyKind.COMMAND, True),
        (ReplyKind.ERROR, True),
        (ReplyKind.IGNORED, False),
    ],
)
async def test_ignored_results_never_post_a_notice(
    runtime_factory: RuntimeFactory, slack: FakeSlack, kind: ReplyKind, reported: bool
) -> None:
    async with runtime_factory(spec=support_spec()) as rt:
        delivery = SlackDelivery(EdgeDeps.of(rt), slack_settings(slack), mods_config())
        job = _job("some words")
        text = "" if kind is ReplyKind.IGNORED else "shown"
        result = ReplyResult(job.turn.turn_id, kind, text, flag="violence")
        await delivery.deliver(job, _stream(result))
        await delivery.aclose()
    assert len(notices(slack)) == (1 if reported else 0)
    if not reported:
        assert slack.calls == []  # an ignored turn touches nothing at all


async def test_the_excerpt_is_redacted_before_it_is_cut(
    runtime_factory: RuntimeFactory, slack: FakeSlack
) -> None:
    # The address straddles the cut: cutting first would leave "alice.smi…" for the redactor to miss.
    text = "x" * (EXCERPT_CHARS - 10) + " " + EMAIL + " and more"
    async with runtime_factory(spec=support_spec()) as rt:
        delivery = SlackDelivery(EdgeDeps.of(rt), slack_settings(slack), mods_config())
        job = _job(text, message_ts="")  # and no message to link to (a slash command)
        result = ReplyResult(job.turn.turn_id, ReplyKind.ANSWER, "ok", flag="x")
        await delivery.deliver(job, _stream(result))
        await delivery.aclose()
    (notice,) = notices(slack)
    quoted = notice.text.split("\n>", 1)[1]
    assert len(quoted) == EXCERPT_CHARS
    assert quoted.endswith("…")
    assert "alice" not in notice.text
    assert "Where: C0GENERAL\n" in notice.text  # no permalink without a message
    assert slack.calls_to("chat.getPermalink") == []


# ---------------------------------------------------------------------------------- pure parts


def test_the_notice_is_mention_safe_whatever_it_quotes() -> None:
    report = FlagReport(
        category="<!channel>",
        turn_id="t1",
        kind=ReplyKind.ANSWER,
        user_id="U0EVIL",
        user_name="@everyone <@U0BOSS>",
        excerpt="hi <!subteam^S123|@team> <https://evil.example|docs> @channel\n> quoted\n",
    )
    permalink = "https://acme.slack.com/archives/C0GENERAL/p1?thread_ts=1.2&cid=C0GENERAL"
    body = notice_text(report, "C0GENERAL", permalink)
    assert not CONTROL.search(body), body
    assert "&lt;@U0BOSS&gt;" in body and "@\u2060everyone" in body
    assert "thread_ts=1.2&amp;cid=C0GENERAL|the message>" in body  # & escaped inside the link
    quoted = ">hi &lt;!subteam^S123|@team&gt; &lt;https://evil.example|docs&gt; @\u2060channel\n>&gt; quoted"
    assert body.endswith(quoted)


def test_a_permalink_that_is_not_slack_shaped_is_left_out() -> None:
    base = FlagReport("violence", "t1", ReplyKind.REFUSAL, "U1", "", "words")
    for bad in ("javascript:alert(1)", "https://x.example/a|click", "https://x.example/a b", "http://plain"):
        body = notice_text(base, "C1", bad)
        assert "Where: C1\n" in body, bad
    assert "Who: U1\n" in notice_text(base, "C1")  # no name: the id alone
    assert notice_text(dataclasses.replace(base, excerpt="  "), "C1").endswith("(no text)")


def test_a_moderators_channel_that_is_not_an_id_stops_start_up() -> None:
    with pytest.raises(ConfigError, match=r"slack\.moderators_channel"):
        parse_bot_config({"moderators_channel": "#moderators"}, "bot.toml: [slack]")
    with pytest.raises(ConfigError, match="SLACK_MODERATORS_CHANNEL"):
        load_slack_settings(_env_file=None, slack_moderators_channel="moderators")
    assert parse_bot_config({"moderators_channel": "C0MODS"}, "x").moderators_channel == "C0MODS"
    assert parse_bot_config({}, "x").moderators_channel == ""


async def test_notices_reach_their_audience_after_a_refused_upload(
    runtime_factory: RuntimeFactory, slack: FakeSlack
) -> None:
    """The one delivery path on Slack: a private notice is an ephemeral for the asker alone, a public one a
    thread message; with Slack refusing the upload, the notices and the flag report still go out."""
    slack.fail("files.getUploadURLExternal", status=500)
    async with runtime_factory(spec=support_spec()) as rt:
        delivery = SlackDelivery(EdgeDeps.of(rt), slack_settings(slack), mods_config())
        job = _job("some words")
        result = ReplyResult(
            job.turn.turn_id,
            ReplyKind.ANSWER,
            "shown",
            attachments=(Attachment("a.png", "image/png", b"\x89PNG"),),
            notices=(Notice("for you alone", Audience.PRIVATE), Notice("for everyone")),
            flag="violence",
        )
        await delivery.deliver(job, _stream(result))
        await delivery.aclose()
    (private,) = slack.ephemerals
    assert private.params["user"] == CUSTOMER and private.params["text"] == "for you alone"
    assert private.params["thread_ts"] == ROOT
    said = [m.text for m in slack.bot_messages("C0GENERAL", ROOT)]
    assert "for everyone" in said and "for you alone" not in said
    assert len(notices(slack)) == 1
