"""Slash commands over HTTP: acked at once with an ephemeral "working on it", answered after."""

from __future__ import annotations

import asyncio

from cryptography.fernet import Fernet

from core.prompt import is_context
from tests.fakes.openai_server import FakeOpenAI, Hang, Reply, last_user_text
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.slack.conftest import ADMIN, StartSlack, bot_config, eventually


async def test_command_acked_fast_while_llm_takes_10s(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    fake_openai.queue(Hang(10))  # the LLM takes 10 s (interrupted at teardown)
    sent = await app.sender.command(
        rq.slash_command("/story", "a lighthouse", response_url=slack.response_url())
    )
    assert sent.status == 200
    assert sent.elapsed < 1.0
    assert sent.json() == {"text": "Working on it…", "response_type": "ephemeral"}
    await eventually(lambda: len(fake_openai.chat_requests) == 1)  # the LLM is working, after the ack
    assert slack.bot_messages() == []
    app.stop.set()  # shutdown cancels the 10-second story after the grace period instead of waiting
    assert await asyncio.wait_for(app.serving, 5) == 0
    assert len(app.runtime.dispatcher.tasks) == 0


async def test_story_streams_into_the_channel(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    fake_openai.queue(Reply("The keeper found a map. " * 20, chunk_chars=30))
    await app.sender.command(rq.slash_command("/story", "a lighthouse keeper", channel="C0FUN"))
    await app.settle()

    (msg,) = slack.bot_messages("C0FUN")
    assert msg.thread_ts == ""
    assert msg.text.split() == ("The keeper found a map. " * 20).split()
    assert msg.blocks == []  # no feedback buttons under command output
    assert "a lighthouse keeper" in last_user_text(fake_openai.chat_requests[0].body)


async def test_help_is_ephemeral_via_response_url(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    url = slack.response_url("help1")
    await app.sender.command(rq.slash_command("/help", response_url=url))
    await app.settle()

    ((rid, body),) = slack.responses
    assert rid == "help1"
    assert body["response_type"] == "ephemeral"
    assert "/story" in body["text"]
    assert "/resume" in body["text"]  # the support bot's own command is listed
    assert slack.bot_messages() == []
    assert fake_openai.chat_requests == []


async def test_command_names_are_configurable(start_slack: StartSlack, slack: FakeSlack) -> None:
    app = await start_slack(config=bot_config(command_prefix="helpdesk-", commands={"/hd-reset": "reset"}))
    assert "/helpdesk-help" in app.adapter.commands
    assert app.adapter.commands["/hd-reset"] == "reset"
    await app.sender.command(rq.slash_command("/helpdesk-help", response_url=slack.response_url()))
    unknown = await app.sender.command(rq.slash_command("/help", response_url=slack.response_url()))
    await app.settle()
    assert len(slack.responses) == 1
    assert unknown.status == 404  # bolt: no listener for a command this app does not own


async def test_reset_by_thread_link_forgets_that_thread(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    root = "1700000100.000100"
    await app.sender.event(rq.app_mention("remember me", ts=root))
    await app.settle()
    link = f"https://acme.slack.com/archives/C0GENERAL/p{root.replace('.', '')}"
    await app.sender.command(rq.slash_command("/reset", link, response_url=slack.response_url("r1")))
    await app.settle()
    await app.sender.event(rq.app_mention("do you remember?", ts="1700000100.000300", thread_ts=root))
    await app.settle()

    sent = fake_openai.chat_requests[-1].body["messages"]
    conversation = [m["content"] for m in sent if m["role"] != "system" and not is_context(m["content"])]
    assert conversation == ["do you remember?"]  # the thread's memory is gone
    ((rid, body),) = slack.responses  # answered to the caller alone, not in the thread
    assert (rid, body["response_type"]) == ("r1", "ephemeral") and body["text"].startswith("Done: I have")
    assert [m.shown for m in slack.bot_messages("C0GENERAL", root)] == [
        "You said: remember me",
        "You said: do you remember?",
    ]


async def test_a_link_to_another_channel_is_refused_privately_for_members(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    root = "1700000110.000100"
    await app.sender.event(rq.app_mention("our secret plan", ts=root, channel="G0PRIVATE"))
    await app.settle()
    link = f"https://acme.slack.com/archives/G0PRIVATE/p{root.replace('.', '')}"
    for command in ("/reset", "/resume"):  # every command that takes a link
        await app.sender.command(
            rq.slash_command(command, link, channel="C0GENERAL", response_url=slack.response_url(command[1:]))
        )
    await app.settle()
    assert [(rid, body["response_type"]) for rid, body in slack.responses] == [
        ("reset", "ephemeral"),
        ("resume", "ephemeral"),
    ]
    assert all("another channel" in body["text"] for _, body in slack.responses)
    assert len(slack.bot_messages("G0PRIVATE", root)) == 1  # the bot said nothing more there
    await app.sender.event(
        rq.app_mention("recall?", ts="1700000110.000300", thread_ts=root, channel="G0PRIVATE")
    )
    await app.settle()
    sent = fake_openai.chat_requests[-1].body["messages"]
    assert "our secret plan" in [m["content"] for m in sent]  # the thread's memory is intact


async def test_an_admin_may_reset_a_thread_of_another_channel_privately(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    root = "1700000120.000100"
    await app.sender.event(rq.app_mention("forget this", ts=root, channel="G0PRIVATE"))
    await app.settle()
    link = f"https://acme.slack.com/archives/G0PRIVATE/p{root.replace('.', '')}"
    await app.sender.command(
        rq.slash_command("/reset", link, user=ADMIN, channel="D0ADMIN", response_url=slack.response_url("a"))
    )
    await app.settle()
    ((rid, body),) = slack.responses
    assert (rid, body["response_type"]) == ("a", "ephemeral") and body["text"].startswith("Done: I have")
    assert len(slack.bot_messages("G0PRIVATE", root)) == 1


async def test_channel_the_bot_cannot_post_in_gets_response_url(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    slack.fail("chat.postMessage", status=200, error="not_in_channel", times=10)
    fake_openai.queue(Reply("A tiny tale.", chunk_chars=4))
    await app.sender.command(rq.slash_command("/story", "tiny", response_url=slack.response_url("s1")))
    await app.settle()

    ((rid, body),) = slack.responses
    assert (rid, body["response_type"], body["text"]) == ("s1", "in_channel", "A tiny tale.")


async def test_response_urls_are_sealed_at_rest(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    key = Fernet.generate_key().decode()
    app = await start_slack(runtime_settings={"parley_credentials_keys": key})
    url = slack.response_url("h1")
    await app.sender.command(rq.slash_command("/help", response_url=url))
    await app.settle()
    ((rid, body),) = slack.responses  # answered through the sealed response_url
    assert (rid, body["response_type"]) == ("h1", "ephemeral")
    redis = app.runtime.redis
    (stored,) = [await redis.get(k) for k in await redis.keys("parley:support:slack:response_url:*")]
    assert stored.startswith("enc1:") and url not in stored and "hooks" not in stored
