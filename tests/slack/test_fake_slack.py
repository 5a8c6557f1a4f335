"""The fake Slack behaves like Slack for the real slack_sdk client (and our retry set-up)."""

from __future__ import annotations

import asyncio
import json

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from adapters.common.stream import StreamRenderer
from adapters.slack.client import web_client
from adapters.slack.sink import SlackSink
from core.types import ReplyDelta, ReplyDone, ReplyEvent, ReplyKind, ReplyResult
from tests.fakes.slack import FakeSlack


async def test_post_returns_ts_and_thread_ts(slack: FakeSlack) -> None:
    client = web_client(slack.bot_token, slack.api_url)
    resp = await client.chat_postMessage(
        channel="C1", thread_ts="100.000001", text="hello", unfurl_links=False
    )
    assert resp["ts"]
    assert resp["message"]["thread_ts"] == "100.000001"
    (call,) = slack.calls_to("chat.postMessage")
    assert call.token == slack.bot_token
    assert call.params["text"] == "hello"
    assert call.params["unfurl_links"] is False


async def test_a_keep_alive_client_reuses_its_connection(slack: FakeSlack) -> None:
    """slack_sdk alone opens (and closes) a session, so a TCP and TLS connection, per call."""
    client = web_client(slack.bot_token, slack.api_url, keep_alive=True)
    try:
        for text in ("one", "two", "three"):
            await client.chat_postMessage(channel="C1", text=text)
    finally:
        await client.aclose()
        await client.aclose()  # idempotent
    peers = {c.peer for c in slack.calls_to("chat.postMessage")}
    assert len(peers) == 1 and "" not in peers
    await client.chat_postMessage(channel="C1", text="after close: a call still works, on its own session")
    assert client.session is None


async def test_bad_token_rejected(slack: FakeSlack) -> None:
    client = web_client("xoxb-wrong", slack.api_url)
    with pytest.raises(SlackApiError) as info:
        await client.auth_test()
    assert info.value.response["error"] == "invalid_auth"


async def test_update_rejects_long_text(slack: FakeSlack) -> None:
    client = web_client(slack.bot_token, slack.api_url)
    ts = (await client.chat_postMessage(channel="C1", text="x"))["ts"]
    with pytest.raises(SlackApiError) as info:
        await client.chat_update(channel="C1", ts=ts, text="y" * 4001)
    assert info.value.response["error"] == "msg_too_long"


async def test_429_retried_after_retry_after(slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", status=429, retry_after=0, times=2)
    client = web_client(slack.bot_token, slack.api_url)
    resp = await client.chat_postMessage(channel="C1", text="eventually")
    assert resp["ok"]
    assert [c.status for c in slack.attempts("chat.postMessage")] == [429, 429, 200]


async def test_5xx_retried(slack: FakeSlack) -> None:
    slack.fail("chat.update", status=503)
    client = web_client(slack.bot_token, slack.api_url)
    ts = (await client.chat_postMessage(channel="C1", text="x"))["ts"]
    await client.chat_update(channel="C1", ts=ts, text="y")
    assert [c.status for c in slack.attempts("chat.update")] == [503, 200]
    assert slack.messages[("C1", ts)].text == "y"


async def test_plain_client_does_not_retry_429(slack: FakeSlack) -> None:
    """Why web_client() exists: the SDK's default client gives up on the first 429."""
    slack.fail("chat.postMessage", status=429, retry_after=0)
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="C1", text="lost")


async def test_native_stream_lifecycle(slack: FakeSlack) -> None:
    client = web_client(slack.bot_token, slack.api_url)
    start = await client.chat_startStream(
        channel="C1",
        thread_ts="1.000001",
        markdown_text="Hel",
        recipient_team_id="T0001",
        recipient_user_id="U1",
    )
    ts = start["ts"]
    with pytest.raises(SlackApiError):
        await client.chat_update(channel="C1", ts=ts, text="no")  # still streaming
    await client.chat_appendStream(channel="C1", ts=ts, markdown_text="lo ")
    await client.chat_stopStream(channel="C1", ts=ts, markdown_text="world")
    assert slack.messages[("C1", ts)].shown == "Hello world"


async def test_sink_and_renderer_split_long_reply(slack: FakeSlack) -> None:
    client = web_client(slack.bot_token, slack.api_url)
    sink = SlackSink(client, "C1", "5.000001")
    text = ("para " * 300 + "\n\n") * 8

    async def events() -> asyncio.AsyncIterator[ReplyEvent]:
        for i in range(0, len(text), 500):
            yield ReplyDelta(text[i : i + 500])
        yield ReplyDone(ReplyResult("t1", ReplyKind.ANSWER, text))

    outcome = await StreamRenderer(sink, min_interval=0.01).run(events())
    assert outcome.delivered
    msgs = slack.bot_messages("C1", "5.000001")
    assert len(msgs) == len(outcome.handles) >= 3
    assert all(len(m.text) <= 4000 for m in msgs)
    assert all(m.params["unfurl_links"] is False and m.params["unfurl_media"] is False for m in msgs)
    assert " ".join(m.text for m in msgs).split() == text.split()


async def test_socket_mode_hello_envelope_ack(slack: FakeSlack) -> None:
    web = web_client(slack.app_token, slack.api_url)
    got: list[SocketModeRequest] = []

    async def listener(client: SocketModeClient, req: SocketModeRequest) -> None:
        got.append(req)
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    sm = SocketModeClient(app_token=slack.app_token, web_client=web)
    sm.socket_mode_request_listeners.append(listener)  # type: ignore[arg-type]
    try:
        await sm.connect()
        await slack.wait_for(lambda: slack.socket_connections == 1)
        env = await slack.send_envelope({"type": "event_callback", "event": {"type": "x"}}, retry_attempt=2)
        await slack.wait_ack(env)
        assert got[0].retry_attempt == 2
        assert env.acked_at is not None
        assert env.acked_at - env.sent_at < 1
    finally:
        await sm.close()
    assert json.dumps(slack.calls_to("apps.connections.open")[0].params) == "{}"
