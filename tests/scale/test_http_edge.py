"""Slow and idle clients at the HTTP edge (the ops server and PORT, where Slack's events arrive): a request
head and an idle keep-alive have a deadline, a body must arrive in time, and connections are capped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from core.ops.http import EdgeLimits, OpsHttp
from core.ops.metrics import Metrics

LIMITS = EdgeLimits(keepalive=0.5, body_timeout=0.5, max_connections=4)


async def echo(request: web.Request) -> web.Response:
    return web.Response(text=await request.text())


@pytest.fixture
async def edge() -> AsyncIterator[OpsHttp]:
    http = OpsHttp(Metrics("edge"), host="127.0.0.1", port=0, ops_host="127.0.0.1", ops_port=0, limits=LIMITS)
    http.mount("POST", "/slack/events", echo)
    async with http:
        yield http


async def closed_after(reader: asyncio.StreamReader, within: float) -> tuple[bytes, float]:
    """What the server sent before it hung up, and how long it took (fails if it never hangs up)."""
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), within)  # read() returns at EOF
    return data, time.monotonic() - started


@pytest.mark.parametrize("server", ["public", "ops"])
async def test_a_silent_or_trickling_client_is_cut_off(edge: OpsHttp, server: str) -> None:
    port = edge.bound[server]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # sends nothing
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
    writer2.write(b"POST /slack/events HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
    await writer2.drain()
    data, _ = await closed_after(reader, 5)
    data2, _ = await closed_after(reader2, 5)
    assert data == data2 == b""
    writer.close()
    writer2.close()


async def test_a_body_that_trickles_gets_408(edge: OpsHttp) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.bound["public"])
    writer.write(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    data, _ = await closed_after(reader, 5)
    assert data.startswith(b"HTTP/1.1 408")
    writer.close()
    # a prompt client is served as before
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.bound["public"])
    writer.write(
        b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    )
    data, _ = await closed_after(reader, 5)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hi")
    writer.close()


async def test_connections_beyond_the_cap_are_refused(edge: OpsHttp) -> None:
    port = edge.bound["public"]
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(LIMITS.max_connections)]
    await asyncio.sleep(0.05)  # let the server register them
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data, _ = await closed_after(reader, 5)
    assert data.startswith(b"HTTP/1.1 503")
    assert edge.sites["public"].refused == 1
    writer.close()
    for _, w in held:
        w.close()
