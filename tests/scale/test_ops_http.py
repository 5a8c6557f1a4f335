"""Health, readiness and metrics over HTTP; routes mounted by adapters; the separate ops port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from core.errors import ConfigError
from core.ops.service import serve
from core.redis_server import free_port
from core.runtime import Runtime
from core.settings import Settings
from tests.conftest import RuntimeFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.scale.helpers import FAST, MemoryDelivery, eventually, scale_spec, turn


@asynccontextmanager
async def serving(rt: Runtime) -> AsyncIterator[asyncio.Event]:
    """``parley run``'s service in this process (no signal handlers), stopped at the end of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(rt, [], workers=True, stop=stop, handle_signals=False))

    async def bound() -> bool:
        return rt.ops.http.listening.is_set() or task.done()

    await eventually(bound, within=5, what="the HTTP server")
    try:
        yield stop
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def test_health_readiness_and_metrics_on_port(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    async def slack_events(request: web.Request) -> web.Response:
        return web.Response(text="mounted")

    delivery = MemoryDelivery()
    async with runtime_factory(spec=scale_spec(), **FAST) as rt:
        rt.ops.deliveries.register("test", delivery)
        rt.ops.http.mount("POST", "/slack/events", slack_events)
        async with serving(rt):
            public = f"http://127.0.0.1:{rt.ops.http.bound['public']}"
            base = f"http://127.0.0.1:{rt.ops.http.bound['ops']}"  # ops have their own server by default
            assert rt.ops.http.bound["public"] != rt.ops.http.bound["ops"]
            assert (await get(f"{base}/healthz"))[0] == 200
            status, body = await get(f"{base}/readyz")
            assert status == 200, body
            async with aiohttp.ClientSession() as http, http.post(f"{public}/slack/events") as response:
                assert (response.status, await response.text()) == (200, "mounted")
            assert (await get(f"{public}/slack/events"))[0] == 405
            assert (await get(f"{public}/nothing-here"))[0] == 404
            for path in ("/metrics", "/healthz", "/readyz"):
                assert (await get(f"{public}{path}"))[0] == 404  # nothing of the ops on the public port

            await rt.dispatcher.dispatch(turn("count me"))
            await delivery.wait_for(1)

            async def acknowledged() -> bool:  # the reply is shown just before the worker acknowledges
                return 'parley_queue_pending{bot="arcade"} 0.0' in (await get(f"{base}/metrics"))[1]

            await eventually(acknowledged, what="queue_pending back to 0")
            status, metrics = await get(f"{base}/metrics")
            assert status == 200
            assert 'parley_turns_total{bot="arcade",kind="answer",platform="test"} 1.0' in metrics
            assert 'parley_queue_events_total{bot="arcade",event="queued"} 1.0' in metrics
            assert 'parley_queue_depth{bot="arcade"}' in metrics
            assert "parley_llm_time_to_first_token_seconds_count" in metrics
            assert 'parley_tokens_total{bot="arcade",direction="out",platform="test"}' in metrics

            rt.ops.http.draining = True
            status, body = await get(f"{base}/readyz")
            assert status == 503
            assert "shutting down" in body


async def test_ops_port_equal_to_port_shares_one_server(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    port = free_port()
    async with runtime_factory(spec=scale_spec(), **{**FAST, "port": port, "parley_ops_port": port}) as rt:
        rt.ops.http.mount("GET", "/hello", hello)
        async with serving(rt):
            assert set(rt.ops.http.bound) == {"public"}
            public = f"http://127.0.0.1:{port}"
            assert (await get(f"{public}/hello")) == (200, "hello")
            assert (await get(f"{public}/metrics"))[0] == 200
            assert (await get(f"{public}/readyz"))[0] == 200


def test_ops_endpoints_default_to_their_own_loopback_port() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.parley_ops_host, settings.parley_ops_port) == ("127.0.0.1", 9090)
    assert settings.parley_http_host == "0.0.0.0"  # noqa: S104 - PORT is the public one
    assert settings.parley_ops_port != settings.port


async def ok(request: web.Request) -> web.Response:
    return web.Response()


async def test_a_taken_port_fails_loudly(runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    blocker = web.AppRunner(web.Application())
    await blocker.setup()
    site = web.TCPSite(blocker, "127.0.0.1", 0)
    await site.start()
    port = blocker.addresses[0][1]
    try:
        async with runtime_factory(spec=scale_spec(), **{**FAST, "port": port}) as rt:
            rt.ops.http.mount("POST", "/slack/events", ok)  # a mounted route: PORT is needed
            with pytest.raises(ConfigError, match=f"^PORT={port}: cannot listen.*PARLEY_OPS_PORT"):
                await serve(rt, [], workers=False, stop=asyncio.Event(), handle_signals=False)
    finally:
        await blocker.cleanup()
