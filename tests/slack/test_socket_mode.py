"""Socket Mode end to end: the real bolt handler on the fake Slack's websocket."""

from __future__ import annotations

import asyncio

import pytest

from adapters.slack.settings import Mode
from tests.fakes.openai_server import FakeOpenAI, Hang, Reply
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.slack.conftest import StartSlack


@pytest.mark.parametrize("queue", [False, True])
async def test_socket_mode_mention_acked_and_answered_once(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI, queue: bool
) -> None:
    app = await start_slack(slack_app_token=slack.app_token, slack_signing_secret=None, queue=queue)
    assert app.adapter.mode is Mode.SOCKET
    await slack.wait_for(lambda: slack.socket_connections == 1)
    fake_openai.queue(Reply("Hello over the socket.", first_delay=0.3))

    payload = rq.app_mention("hi socket", ts="1700000400.000100")
    env = await slack.wait_ack(await slack.send_envelope(payload))
    assert env.acked_at is not None
    assert env.acked_at - env.sent_at < 0.3  # acked before the LLM answered
    retry = await slack.wait_ack(await slack.send_envelope(payload, retry_attempt=1, retry_reason="timeout"))
    assert retry.acked_at is not None
    await app.settle()

    assert len(fake_openai.chat_requests) == 1
    assert [m.shown for m in slack.bot_messages("C0GENERAL", "1700000400.000100")] == [
        "Hello over the socket."
    ]
    assert slack.calls_to("apps.connections.open")


async def test_socket_mode_slash_command_ack_carries_working_text(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack(slack_app_token=slack.app_token, slack_signing_secret=None)
    await slack.wait_for(lambda: slack.socket_connections == 1)
    fake_openai.queue(Hang(10))
    env = await slack.send_envelope(rq.slash_command("/story", "socks"), type="slash_commands")
    await slack.wait_ack(env)
    assert env.ack_payload == {"text": "Working on it…", "response_type": "ephemeral"}
    app.stop.set()
    assert await asyncio.wait_for(app.serving, 5) == 0
    await slack.wait_for(lambda: slack.socket_connections == 0)


async def test_socket_closed_on_shutdown(start_slack: StartSlack, slack: FakeSlack) -> None:
    app = await start_slack(slack_app_token=slack.app_token, slack_signing_secret=None)
    await slack.wait_for(lambda: slack.socket_connections == 1)
    assert await app.runtime.ops.http.readiness() == {}
    app.stop.set()
    await slack.wait_for(lambda: slack.socket_connections == 0)
    assert await asyncio.wait_for(app.serving, 5) == 0
    await app.adapter.aclose()  # idempotent
