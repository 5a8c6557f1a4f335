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
from tests.conftest import RuntimeFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.scale.helpers import FAST, MemoryDelivery, eventually, scale_spec, turn


@asynccontextmanager
async def serving(rt: Runtime) -> AsyncIterator[asyncio.Event]:
    """``parley run``'s service in this process (no signal handlers), stopped at the end of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(rt, [], workers=True, stop=stop, handle_signals=False))

    async def bound() -> bool:
        return bool(rt.ops.http.bound) or task.done()

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
            base = f"http://127.0.0.1:{rt.ops.http.bound['public']}"
            assert (await get(f"{base}/healthz"))[0] == 200
            status, body = await get(f"{base}/readyz")
            assert status == 200, body
            async with aiohttp.ClientSession() as http, http.post(f"{base}/slack/events") as response:
                assert (response.status, await response.text()) == (200, "mounted")
            assert (await get(f"{base}/slack/events"))[0] == 405
            assert (await get(f"{base}/nothing-here"))[0] == 404

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


async def test_the_ops_port_keeps_metrics_off_the_public_port(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async with runtime_factory(spec=scale_spec(), **FAST, parley_ops_port=free_port()) as rt:
        rt.ops.http.mount("GET", "/hello", hello)
        async with serving(rt):
            public = f"http://127.0.0.1:{rt.ops.http.bound['public']}"
            ops = f"http://127.0.0.1:{rt.ops.http.bound['ops']}"
            assert rt.ops.http.bound["public"] != rt.ops.http.bound["ops"]
            assert (await get(f"{public}/hello")) == (200, "hello")
            assert (await get(f"{public}/metrics"))[0] == 404
            assert (await get(f"{ops}/metrics"))[0] == 200
            assert (await get(f"{ops}/readyz"))[0] == 200


async def test_a_taken_port_fails_loudly(runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI) -> None:

    blocker = web.AppRunner(web.Application())
    await blocker.setup()
    site = web.TCPSite(blocker, "127.0.0.1", 0)
    await site.start()
    port = blocker.addresses[0][1]
    try:
        async with runtime_factory(spec=scale_spec(), **{**FAST, "port": port}) as rt:
            with pytest.raises(ConfigError, match=f"PORT={port}: cannot listen.*PARLEY_OPS_PORT"):
                await serve(rt, [], workers=False, stop=asyncio.Event(), handle_signals=False)
    finally:
        await blocker.cleanup()
