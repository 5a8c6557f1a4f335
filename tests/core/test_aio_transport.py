"""Plain-http model endpoints go through aiohttp with a body read in batches (core/net/aio.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from core.errors import LLMUnavailable
from core.llm import ChatMessage, LLMDelta, LLMRequest, OpenAILLM
from core.net.aio import BODY, AioBody, AioTransport
from core.net.tls import http_client
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI, Reply

HI = LLMRequest([ChatMessage("user", "hi")], "fake-model")
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
WORDS = "".join(f"w{i:02d} " for i in range(40))  # 40 chunks of 4 characters


@contextlib.asynccontextmanager
async def body_of(fake: FakeOpenAI, *, close: bool = False) -> AsyncIterator[AioBody]:
    """A streamed chat response's body through the aiohttp transport (asking for ``Connection: close``)."""
    client = http_client(fake.base_url)
    headers = {"Connection": "close"} if close else {}
    try:
        url = f"{fake.base_url}/chat/completions"
        async with client.stream("POST", url, json=CHAT, headers=headers) as response:
            body = response.extensions[BODY]
            assert isinstance(body, AioBody)
            yield body
    finally:
        await client.aclose()


async def test_the_socket_rests_between_batches_and_a_batch_takes_what_the_kernel_holds(
    fake_openai: FakeOpenAI,
) -> None:
    hold = asyncio.Event()
    fake_openai.queue(Reply(WORDS, chunk_chars=4, hold=hold, hold_at=1))
    async with body_of(fake_openai) as body:
        assert body.identity
        first = await body.batch()
        assert first.count(b"data:") == 1  # the only chunk sent before the hold
        hold.set()
        await fake_openai.streams_done.wait()  # the server wrote the rest of the reply, and ended it
        assert body.received == len(first)  # all of it waited in the socket: nobody was woken
        batches = []
        while data := await body.batch():
            batches.append(data)
        rest = b"".join(batches)
        assert rest.count(b"data:") == 39 + 2  # every other chunk, the finish chunk and [DONE]
        assert len(batches) < 39 / 4  # many chunks a read (the kernel hands over what it holds)
        assert body.received == len(first) + len(rest)


async def test_a_stream_left_early_does_not_leave_a_paused_connection_for_the_next(
    fake_openai: FakeOpenAI,
) -> None:
    hold = asyncio.Event()
    fake_openai.queue(Reply("one two three four five", chunk_chars=4, hold=hold, hold_at=2), Reply("again"))
    llm = OpenAILLM(make_settings(openai_base_url=fake_openai.base_url, openai_api_key="k"))
    try:
        events = llm.stream(HI)
        assert isinstance(await anext(events), LLMDelta)
        await events.aclose()  # the consumer went away mid-reply (a cancelled turn)
        hold.set()
        again = [e.text async for e in llm.stream(HI) if isinstance(e, LLMDelta)]
    finally:
        await llm.aclose()
    assert "".join(again) == "again"


async def test_a_quiet_body_wakes_nobody_for_tokens_and_its_end_ends_a_rest_at_once(
    fake_openai: FakeOpenAI,
) -> None:
    hold = asyncio.Event()
    fake_openai.queue(Reply(WORDS, chunk_chars=4, hold=hold, hold_at=1))
    async with body_of(fake_openai, close=True) as body:
        assert body.closes
        first = await body.batch()
        assert body.quiet()  # registered for reading, woken by the FIN only
        hold.set()
        async with asyncio.timeout(20):
            await body.rest(600)  # the server's close ends the rest, not the 600 s
        rest = b""
        while data := await body.batch():
            rest += data
        assert (first + rest).count(b"data:") == 40 + 2


async def test_tokens_below_the_quiet_mark_stay_in_the_kernel_until_a_batch_asks(
    fake_openai: FakeOpenAI,
) -> None:
    hold = asyncio.Event()
    fake_openai.queue(Reply(WORDS, chunk_chars=4, delay=0.05, hold=hold, hold_at=1))  # 2 s of tokens
    async with body_of(fake_openai, close=True) as body:
        first = await body.batch()
        assert first.count(b"data:") == 1 and body.quiet()
        hold.set()
        await asyncio.sleep(0.5)  # tokens arrive meanwhile; the reply cannot have ended (>= 2 s)
        assert body.received == len(first)  # the socket is registered, yet no token woke a read
        data = await body.batch()
        assert data.count(b"data:") >= 1 and body.received == len(first) + len(data)


async def test_a_server_that_keeps_the_connection_gets_no_quiet_body(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(Reply("one two"))
    async with body_of(fake_openai) as body:
        assert not body.closes and not body.quiet()
        while await body.batch():
            pass


async def test_a_streamed_reply_over_http_asks_for_a_closed_connection_and_ends_with_the_fin(
    fake_openai: FakeOpenAI,
) -> None:
    text = "".join(f"w{i:02d} " for i in range(30))
    fake_openai.queue(Reply(text, chunk_chars=4, delay=0.005))
    # Batches 600 s apart: only the server's close can end the reply in time.
    llm = OpenAILLM(
        make_settings(openai_base_url=fake_openai.base_url, openai_api_key="k"), quiet_batch_seconds=600
    )
    try:
        async with asyncio.timeout(20):
            got = [e.text async for e in llm.stream(HI) if isinstance(e, LLMDelta)]
    finally:
        await llm.aclose()
    assert "".join(got) == text
    assert fake_openai.chat_requests[-1].headers.get("Connection") == "close"


async def test_quiet_streams_can_be_turned_off(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(Reply("one two three"))
    settings = make_settings(
        openai_base_url=fake_openai.base_url, openai_api_key="k", parley_llm_quiet_streams=False
    )
    llm = OpenAILLM(settings)
    try:
        got = [e.text async for e in llm.stream(HI) if isinstance(e, LLMDelta)]
    finally:
        await llm.aclose()
    assert "".join(got) == "one two three"
    assert fake_openai.chat_requests[-1].headers.get("Connection") != "close"


async def test_an_endpoint_nobody_listens_on_is_unavailable_not_a_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connecting is refused
    url = f"http://127.0.0.1:{port}/v1"
    llm = OpenAILLM(make_settings(openai_base_url=url, openai_api_key="k", parley_llm_max_retries=0))
    try:
        with pytest.raises(LLMUnavailable, match="cannot connect"):
            _ = [e async for e in llm.stream(HI)]
    finally:
        await llm.aclose()


async def test_https_endpoints_keep_the_httpx_transport() -> None:
    plain, tls = http_client("http://127.0.0.1:1/v1"), http_client("https://api.openai.com/v1")
    try:
        assert isinstance(plain._transport, AioTransport)
        assert not isinstance(tls._transport, AioTransport)  # asyncio's TLS would wake us for every token
    finally:
        await plain.aclose()
        await tls.aclose()
