"""Issue 20, finding 7: one client address cannot take every connection slot (a per-peer cap below the
global one), trusted proxies are exempt, and X-Forwarded-For is believed only from them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from core.ops.http import EdgeLimits, OpsHttp, client_address, parse_networks
from core.ops.metrics import Metrics


async def echo(request: web.Request) -> web.Response:
    return web.Response(text=await request.text())


async def serve(limits: EdgeLimits) -> AsyncIterator[OpsHttp]:
    http = OpsHttp(Metrics("edge"), host="127.0.0.1", port=0, ops_host="127.0.0.1", ops_port=0, limits=limits)
    http.mount("POST", "/slack/events", echo)
    async with http:
        yield http


@pytest.fixture
async def edge() -> AsyncIterator[OpsHttp]:
    async for http in serve(EdgeLimits(keepalive=30, max_connections=32, max_per_peer=8)):
        yield http


async def half_sent(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(b"POST /slack/events HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
    await writer.drain()
    return reader, writer


async def delivered(port: int, source: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(
        b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    )
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def test_one_address_cannot_take_every_slot(edge: OpsHttp) -> None:
    port = edge.bound["public"]
    held = [await half_sent(port, "127.0.0.2") for _ in range(64)]  # twice the global cap
    site = edge.sites["public"]
    for reader, _ in held[8:]:  # accepted in order: all but the first 8 are answered 503 and closed
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 503")
    assert site.per_peer["127.0.0.2"] == 8 and site.refused_per_peer == 64 - 8
    # Slack's fresh deliveries from other addresses are all served.
    answers = [await delivered(port, f"127.0.0.{3 + i % 5}") for i in range(10)]
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b"hi") for a in answers), answers
    for _, writer in held:
        writer.close()


async def test_a_trusted_proxy_is_exempt_from_the_per_peer_cap() -> None:
    limits = EdgeLimits(
        keepalive=30, max_connections=32, max_per_peer=2, trusted_proxies=parse_networks("127.0.0.9")
    )
    async for http in serve(limits):
        port = http.bound["public"]
        held = [await half_sent(port, "127.0.0.9") for _ in range(6)]
        assert (await delivered(port, "127.0.0.9")).startswith(b"HTTP/1.1 200")
        assert http.sites["public"].refused_per_peer == 0
        for _, writer in held:
            writer.close()


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    trusted = parse_networks("10.0.0.0/8")

    def request(peer: str, xff: str) -> web.Request:
        req = make_mocked_request("GET", "/", headers={"X-Forwarded-For": xff})
        return req.clone(remote=peer)

    assert client_address(request("203.0.113.5", "1.2.3.4"), trusted) == "203.0.113.5"  # not a proxy: ignored
    # Behind the proxy: the nearest untrusted hop (what the client wrote first is not believed).
    assert client_address(request("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.3"), trusted) == "198.51.100.7"
    assert client_address(request("10.0.0.2", "198.51.100.7"), ()) == "10.0.0.2"
    with pytest.raises(ValueError, match="not an IP"):
        parse_networks("10.0.0.0/8, proxy.internal")
