"""End to end over HTTP: signed Events API requests -> the real bolt app -> engine -> fake Slack."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace
from typing import Any

import pytest

from tests.conftest import RuntimeFactory
from tests.fakes.openai_server import FakeOpenAI, Hang, Reply, last_user_text
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.slack.conftest import RUNTIME, StartSlack, bot_config, eventually, settle_together, support_spec


@pytest.mark.parametrize("queue", [False, True])
async def test_mention_gets_threaded_streamed_reply(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI, queue: bool
) -> None:
    app = await start_slack(queue=queue)
    fake_openai.queue(Reply("Orders placed before **14:00** ship the same day.", chunk_chars=6))
    event = rq.app_mention("when do orders ship?", ts="1700000000.000100")
    sent = await app.sender.event(event)
    assert sent.status == 200
    await app.settle()

    (msg,) = slack.bot_messages("C0GENERAL")
    assert msg.thread_ts == "1700000000.000100"  # answered in the mention's thread
    assert msg.shown == "Orders placed before **14:00** ship the same day."
    assert slack.calls_to("chat.startStream")  # native streaming where the workspace has it
    assert last_user_text(fake_openai.chat_requests[0].body) == "when do orders ship?"  # mention stripped
    feedback = msg.blocks[-1]
    assert feedback["type"] == "actions"
    assert {e["action_id"] for e in feedback["elements"]} == {"parley_feedback_up", "parley_feedback_down"}


async def test_edit_mode_posts_then_updates(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack(config=bot_config(streaming="edit"))
    fake_openai.queue(Reply("word " * 200, chunk_chars=40, delay=0.02))
    await app.sender.event(rq.app_mention("long please", ts="1700000001.000100"))
    await app.settle()

    (msg,) = slack.bot_messages("C0GENERAL", "1700000001.000100")
    assert not slack.calls_to("chat.startStream")
    assert msg.edits >= 1  # posted early, then edited as the text grew
    assert msg.text.split() == ["word"] * 200
    post = slack.calls_to("chat.postMessage")[0]
    assert post.params["unfurl_links"] is False
    assert post.params["unfurl_media"] is False
    first_edit = slack.calls_to("chat.update")
    gaps = [b.at - a.at for a, b in itertools.pairwise(first_edit)]
    # Paced; the final text follows the last edit after a quarter interval, then the feedback buttons.
    assert all(g >= 0.15 for g in gaps[:-2])


async def test_workspace_without_native_streaming_falls_back(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    slack.streaming_supported = False
    app = await start_slack()
    await app.sender.event(rq.app_mention("one", ts="1700000002.000100"))
    await app.settle()
    await app.sender.event(rq.app_mention("two", ts="1700000003.000100"))
    await app.settle()

    assert [m.text for m in slack.bot_messages("C0GENERAL")] == ["You said: one", "You said: two"]
    assert len(slack.attempts("chat.startStream")) == 1  # remembered: not asked again


async def test_dm_is_answered_in_the_dm(start_slack: StartSlack, slack: FakeSlack) -> None:
    app = await start_slack()
    await app.sender.event(rq.dm("where is my parcel?", channel="D0ADA"))
    await app.settle()

    (msg,) = slack.bot_messages("D0ADA")
    assert msg.thread_ts == ""  # a top-level DM gets a top-level answer
    assert msg.text == "You said: where is my parcel?"


async def test_thread_follow_up_without_mention(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    root = "1700000010.000100"
    await app.sender.event(rq.app_mention("first question", ts=root))
    await app.settle()
    await app.sender.event(rq.message("and a follow-up", ts="1700000010.000200", thread_ts=root))
    await app.settle()
    # A thread the bot never joined: its chatter is not answered.
    await app.sender.event(rq.message("other thread", ts="1700000011.000200", thread_ts="1700000011.000100"))
    await app.settle()

    assert [m.shown for m in slack.bot_messages("C0GENERAL", root)] == [
        "You said: first question",
        "You said: and a follow-up",
    ]
    assert slack.bot_messages("C0GENERAL", "1700000011.000100") == []
    assert len(fake_openai.chat_requests) == 2
    assert not await app.runtime.redis.keys("*1700000011.000100*")  # nor kept: the bot was not asked in
    # The follow-up was answered with the thread's memory.
    roles = [m["role"] for m in fake_openai.chat_requests[1].body["messages"]]
    assert roles[-3:] == ["user", "assistant", "user"]


async def test_unjoined_thread_kept_as_context_when_configured(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack(config=bot_config(remember_unjoined_threads=True))
    root = "1700000013.000100"
    await app.sender.event(rq.message("the printer is on fire", ts="1700000013.000200", thread_ts=root))
    await app.settle()
    assert slack.bot_messages() == []
    await app.sender.event(rq.app_mention("what should we do?", ts="1700000013.000300", thread_ts=root))
    await app.settle()
    history = [m["content"] for m in fake_openai.chat_requests[-1].body["messages"]]
    assert "the printer is on fire" in history


async def test_mention_and_its_message_twin_answered_once(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    ts = "1700000012.000100"
    await app.sender.event(rq.app_mention("hello", ts=ts))
    await app.sender.event(rq.message("<@UBOT> hello", ts=ts))
    await app.settle()
    assert len(slack.bot_messages("C0GENERAL", ts)) == 1
    assert len(fake_openai.chat_requests) == 1


@pytest.mark.parametrize("queue", [False, True])
async def test_retried_event_answered_exactly_once(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI, queue: bool
) -> None:
    app = await start_slack(queue=queue)
    fake_openai.queue(Reply("Only once.", first_delay=0.5))
    event = rq.app_mention("hi", ts="1700000020.000100")
    first = await app.sender.event(event)
    retry1 = await app.sender.event(event, retry_num=1)
    retry2 = await app.sender.event(event, retry_num=2)
    assert [first.status, retry1.status, retry2.status] == [200, 200, 200]
    await app.settle()

    assert len(fake_openai.chat_requests) == 1
    assert [m.shown for m in slack.bot_messages("C0GENERAL")] == ["Only once."]


@pytest.mark.parametrize("queue", [False, True])
async def test_two_instances_on_one_redis_answer_once(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI, queue: bool
) -> None:
    one = await start_slack(queue=queue)
    two = await start_slack(queue=queue)
    assert one.runtime is not two.runtime
    fake_openai.queue(Reply("From one replica.", first_delay=0.2))
    event = rq.app_mention("hello both", ts="1700000030.000100")
    a = await one.sender.event(event)
    b = await two.sender.event(event)
    assert (a.status, b.status) == (200, 200)
    # Settled together: with the queue on, either instance's worker may answer the turn the other took.
    await settle_together(one, two)

    assert len(fake_openai.chat_requests) == 1
    assert [m.shown for m in slack.bot_messages("C0GENERAL")] == ["From one replica."]


async def test_tampered_signature_rejected_without_llm(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    sent = await app.sender.event(rq.app_mention("sneaky"), tamper=True)
    assert sent.status == 401
    await app.settle()
    assert fake_openai.chat_requests == []
    assert slack.bot_messages() == []


async def test_url_verification_challenge(start_slack: StartSlack) -> None:
    app = await start_slack()
    sent = await app.sender.event({"token": "t", "challenge": "c0ffee", "type": "url_verification"})
    assert sent.status == 200
    assert sent.json() == {"challenge": "c0ffee"}


async def test_old_timestamp_rejected(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    sent = await app.sender.event(rq.app_mention("replayed"), timestamp=time.time() - 400)
    assert sent.status == 401
    fresh = await app.sender.event(rq.app_mention("fresh"), timestamp=time.time() - 60)
    assert fresh.status == 200  # within Slack's 5 minutes: accepted
    await app.settle()
    assert [last_user_text(r.body) for r in fake_openai.chat_requests] == ["fresh"]


@pytest.mark.parametrize("queue", [False, True])
async def test_ack_does_not_wait_for_the_llm(
    start_slack: StartSlack, fake_openai: FakeOpenAI, queue: bool
) -> None:
    app = await start_slack(queue=queue)
    fake_openai.queue(Hang(30))
    sent = await app.sender.event(rq.app_mention("slow one"))
    assert sent.status == 200
    assert sent.elapsed < 1.0
    await eventually(lambda: len(fake_openai.chat_requests) == 1)  # the LLM works after the ack
    # Shutdown gives the turn the grace period (0.5 s here), then cancels it: nothing is left running.
    app.stop.set()
    assert await asyncio.wait_for(app.serving, 5) == 0
    assert len(app.adapter.tasks) == 0
    assert len(app.runtime.dispatcher.tasks) == 0


@pytest.mark.parametrize("streaming", ["auto", "edit"])
async def test_long_reply_with_code_split_into_balanced_chunks(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI, streaming: str
) -> None:
    app = await start_slack(config=bot_config(streaming=streaming))
    prose = "This step explains what the code below does, in some detail. " * 12
    code = (
        "```python\n"
        + "\n".join(f"total_{i} = price_{i} * quantity_{i}  # line {i}" for i in range(45))
        + "\n```"
    )
    text = "\n\n".join([prose, code] * 4)
    assert 9_000 <= len(text) <= 12_000
    # Paced: a reply that arrives over time (all at once, the first read would take the whole of it)
    fake_openai.queue(Reply(text, chunk_chars=400, delay=0.01))
    await app.sender.event(rq.app_mention("show me the code", ts="1700000040.000100"))
    await app.settle()

    msgs = slack.bot_messages("C0GENERAL", "1700000040.000100")
    assert len(msgs) >= 3
    for msg in msgs:
        assert 0 < len(msg.text) <= 4_000
        assert msg.text.count("```") % 2 == 0, msg.text[-200:]
        assert not msg.streaming
    if streaming == "auto":  # streamed natively until it outgrew one message, then handed over to edits
        assert slack.calls_to("chat.startStream")
        assert slack.calls_to("chat.stopStream")
        assert msgs[0].edits >= 1
    joined = "".join(m.text for m in msgs).replace("```", "").split()
    assert joined == text.replace("```python", "").replace("```", "").split()


@pytest.mark.parametrize("streaming", ["auto", "edit"])
async def test_model_cannot_ping_anyone(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI, streaming: str
) -> None:
    app = await start_slack(config=bot_config(streaming=streaming))
    fake_openai.queue(
        Reply("Attention <!channel> and <!here> and @everyone: ask <@U0BOSS> or <!subteam^S1|@support>.")
    )
    await app.sender.event(rq.app_mention("announce", ts="1700000050.000100"))
    await app.settle()

    (msg,) = slack.bot_messages("C0GENERAL")
    shown = msg.shown
    for ping in ("<!channel>", "<!here>", "<@U0BOSS>", "<!subteam^S1|@support>", "@everyone"):
        assert ping not in shown  # (core safety may rewrite first; test_reply.py checks the adapter alone)


async def test_rate_limited_post_is_delivered_after_retry(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack(config=bot_config(streaming="edit"))
    slack.fail("chat.postMessage", status=429, retry_after=0)
    await app.sender.event(rq.app_mention("busy channel", ts="1700000060.000100"))
    await app.settle()

    assert [c.status for c in slack.attempts("chat.postMessage")] == [429, 200]
    (msg,) = slack.bot_messages("C0GENERAL")
    assert msg.text == "You said: busy channel"


async def test_failed_stream_start_falls_back_to_post(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    slack.fail("chat.startStream", status=200, error="fatal_error")
    await app.sender.event(rq.app_mention("still answer", ts="1700000061.000100"))
    await app.settle()
    (msg,) = slack.bot_messages("C0GENERAL")
    assert msg.text == "You said: still answer"
    assert app.delivery.no_native == set()  # a one-off failure is not remembered as "unsupported"


async def test_undeliverable_reply_is_logged_with_conversation(
    start_slack: StartSlack, slack: FakeSlack, capsys: pytest.CaptureFixture[str]
) -> None:
    app = await start_slack(config=bot_config(streaming="edit"))
    slack.fail("chat.postMessage", status=200, error="channel_not_found", times=10)
    await app.sender.event(rq.app_mention("lost", channel="C0GONE", ts="1700000062.000100"))
    await app.settle()
    assert slack.bot_messages() == []
    err = capsys.readouterr()
    logged = err.err + err.out
    assert "reply_undeliverable" in logged
    assert "slack:T0001:C0GONE:1700000062.000100" in logged


async def test_feedback_click_recorded(start_slack: StartSlack, slack: FakeSlack) -> None:
    app = await start_slack()
    await app.sender.event(rq.app_mention("rate me", ts="1700000070.000100"))
    await app.settle()
    (msg,) = slack.bot_messages("C0GENERAL")
    turn_id = msg.blocks[-1]["elements"][0]["value"]

    click = rq.block_action("parley_feedback_down", turn_id, message_ts=msg.ts, thread_ts=msg.thread_ts)
    sent = await app.sender.action(click)
    assert sent.status == 200
    await app.settle()

    votes = await app.runtime.redis.hgetall(app.adapter.state.feedback_key(turn_id))
    assert votes["U0USER"] == "down"
    totals = await app.runtime.redis.hgetall(app.adapter.state.feedback_totals_key())
    assert totals == {"down": "1"}
    (thanks,) = slack.ephemerals
    assert thanks.params["user"] == "U0USER"


async def test_own_and_edited_messages_ignored(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    for payload in (
        rq.dm("echo", user="UBOT"),
        rq.dm("edited", subtype="message_changed"),
        rq.dm("other bot", user="", bot_id="B0OTHER", subtype="bot_message"),
    ):
        assert (await app.sender.event(payload)).status == 200
    await app.settle()
    assert fake_openai.chat_requests == []
    assert slack.bot_messages() == []


async def test_assistant_panel(start_slack: StartSlack, slack: FakeSlack) -> None:
    app = await start_slack()
    thread = "1700000080.000100"
    await app.sender.event(rq.assistant_thread_started(channel="D0PANEL", thread_ts=thread))
    await app.settle()
    (prompts,) = slack.calls_to("assistant.threads.setSuggestedPrompts")
    assert prompts.params["prompts"] == [{"title": "Track an order", "message": "Where is my order?"}]
    (greeting,) = slack.bot_messages("D0PANEL", thread)
    assert greeting.text.startswith("Hi! I'm the Helpdesk assistant")

    await app.sender.event(rq.dm("my order?", channel="D0PANEL", thread_ts=thread))
    await app.settle()
    (status,) = slack.calls_to("assistant.threads.setStatus")
    assert status.params["status"] == "is thinking…"
    assert status.params["thread_ts"] == thread
    assert slack.bot_messages("D0PANEL", thread)[-1].shown == "You said: my order?"


@pytest.mark.parametrize("streaming", ["auto", "edit"])
async def test_moderation_takes_back_a_streamed_answer(
    start_slack: StartSlack,
    slack: FakeSlack,
    fake_openai: FakeOpenAI,
    runtime_factory: RuntimeFactory,
    streaming: str,
) -> None:
    spec = support_spec()
    moderation = spec.config.moderation.model_copy(update={"blocked_patterns": ["secret-launch-code"]})
    spec = replace(spec, config=spec.config.model_copy(update={"moderation": moderation}))
    async with runtime_factory(spec=spec, parley_queue=False, **RUNTIME) as rt:
        app = await start_slack(runtime=rt, config=bot_config(streaming=streaming))
        words = "Here is a long and perfectly harmless preamble. " * 6
        fake_openai.queue(Reply(words + "The secret-launch-code is 1234.", chunk_chars=20, delay=0.01))
        await app.sender.event(rq.app_mention("tell me", ts="1700000090.000100"))
        await app.settle()
        await app.adapter.aclose()

    (msg,) = slack.bot_messages("C0GENERAL")
    persona = spec.persona(None)
    assert msg.text == persona.refusal  # what was shown is replaced, and the stream was stopped first
    assert "secret-launch-code" not in msg.shown
    assert not msg.streaming
    assert msg.blocks == []  # no feedback buttons under a refusal


async def test_forget_erases_the_users_votes_and_cached_name(
    start_slack: StartSlack, slack: FakeSlack
) -> None:
    slack.add_user("U0ADA", display_name="AdaDisplayName")
    app = await start_slack()
    await app.sender.event(rq.app_mention("rate me", ts="1700000071.000100", user="U0ADA"))
    await app.settle()
    (msg,) = slack.bot_messages("C0GENERAL")
    turn_id = msg.blocks[-1]["elements"][0]["value"]
    click = rq.block_action("parley_feedback_up", turn_id, user="U0ADA", message_ts=msg.ts)
    assert (await app.sender.action(click)).status == 200
    await app.settle()
    redis = app.runtime.redis
    assert (await redis.hgetall(app.adapter.state.feedback_key(turn_id)))["U0ADA"] == "up"
    assert await redis.get(app.adapter.delivery.names.key("T0001", "U0ADA")) == "AdaDisplayName"

    await app.sender.command(rq.slash_command("/forget", user="U0ADA", response_url=slack.response_url("f")))
    await app.settle()
    ((_, body),) = slack.responses
    assert body["text"].startswith("Done:")
    left = {}
    async for key in redis.scan_iter(count=500):
        value = str(await redis_dump_value(redis, key))
        if "U0ADA" in key or "U0ADA" in value or "AdaDisplayName" in value:
            left[key] = value
    assert left == {}  # neither the vote nor the cached display name survive /forget
    assert await redis.hgetall(app.adapter.state.feedback_totals_key()) == {"up": "1"}  # counts, no one's id


async def redis_dump_value(redis: Any, key: str) -> object:
    kind = await redis.type(key)
    readers = {"hash": redis.hgetall, "string": redis.get, "set": redis.smembers}
    if kind == "list":
        return await redis.lrange(key, 0, -1)
    if kind == "zset":
        return await redis.zrange(key, 0, -1)
    if kind == "stream":
        return await redis.xrange(key)
    return await readers[kind](key) if kind in readers else ""
