"""Fixtures for the Discord tests: the fake Discord, and a running arcade bot wired to it.

``bot_factory(**settings)`` starts the real adapter (real discord.py, real Redis, fake OpenAI) against the
fake Discord and waits until discord.py is ready. On the way out every test also checks the promises
that must never break: each request that carried message content also carried ``allowed_mentions`` that
ping no one, the fake saw nobody pinged, and no message would have unfurled a link (``fake.unfurls``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.common.deps import EdgeDeps
from adapters.discord.adapter import DiscordAdapter
from adapters.discord.delivery import DiscordDelivery
from adapters.discord.settings import DiscordSettings
from core.bot import BotSpec
from core.ops.service import serve
from core.runtime import Runtime
from tests.conftest import RuntimeFactory
from tests.fakes.discord import FakeDiscord
from tests.net import LOOPBACK


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


def discord_settings(fake: FakeDiscord, **overrides: Any) -> DiscordSettings:
    values: dict[str, Any] = {
        "token": fake.token,
        "api_url": fake.api_url,
        "guild_ready_timeout": 0.05,
        "login_backoff_base": 0.05,
        "shutdown_grace": 2.0,
        "identify_window": 0.5,
        "edit_interval": 0.2,  # quick turns; the pacing tests set Discord's 1 s (or their own) explicitly
    }
    values.update(overrides)
    return DiscordSettings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class RunningBot:
    adapter: DiscordAdapter
    runtime: Runtime
    fake: FakeDiscord
    serving: asyncio.Task[int]


BotFactory = Callable[..., AbstractAsyncContextManager[RunningBot]]


def assert_mention_safe(fake: FakeDiscord) -> None:
    for call in fake.calls:
        body = call.json
        if call.method == "POST" and call.path.endswith("/callback") and isinstance(body, dict):
            body = body.get("data") or {}
        if isinstance(body, dict) and "content" in body:
            mentions = body.get("allowed_mentions")
            assert mentions is not None, f"{call.route} sent content without allowed_mentions"
            assert mentions.get("parse") == [], f"{call.route} allows {mentions}"
            assert not mentions.get("users") and not mentions.get("roles"), f"{call.route}: {mentions}"
            assert not mentions.get("replied_user"), f"{call.route} pings the replied-to user"
    assert fake.pings == [], f"somebody was pinged: {fake.pings}"


SUPPRESS_EMBEDS = 1 << 2


def unsuppressed_requests(fake: FakeDiscord) -> list[str]:
    """Requests that create a message, or edit one's flags, without SUPPRESS_EMBEDS (an edit with flags 0
    clears it; an edit without ``flags`` keeps what the message had, so a test also checks the messages'
    final flags: a deferred response is created without the flag)."""
    writes = (
        "POST /channels/{channel_id}/messages",
        "PATCH /channels/{channel_id}/messages/{message_id}",
        "POST /webhooks/{app_id}/{token}",
        "PATCH /webhooks/{app_id}/{token}/messages/@original",
        "PATCH /webhooks/{app_id}/{token}/messages/{message_id}",
    )
    bad = []
    for call in fake.calls:
        body = call.json
        if call.route.endswith("/callback") and isinstance(body, dict):
            if body.get("type") not in (4, 7):  # 5, 6: a deferral or an acknowledgement, no content
                continue
            body = body.get("data") or {}
        elif call.route not in writes:
            continue
        if not isinstance(body, dict) or not ("content" in body or body.get("_files")):
            continue
        if call.method == "PATCH" and "flags" not in body:
            continue  # Discord keeps the message's flags: the test checks the messages' final flags
        if not int(body.get("flags") or 0) & SUPPRESS_EMBEDS:
            bad.append(f"{call.route} flags={body.get('flags')}")
    return bad


@pytest.fixture
def bot_factory(runtime_factory: RuntimeFactory, fake_discord: FakeDiscord) -> BotFactory:
    """Start the bot as ``parley run`` does (``core.ops.service.serve``: the adapter plus a queue worker,
    or the adapter alone with ``queue=False``) against the fake Discord; stop it on the way out."""

    @asynccontextmanager
    async def start(
        *,
        fake: FakeDiscord | None = None,
        wait_ready: bool = True,
        queue: bool = True,
        runtime_settings: dict[str, Any] | None = None,
        spec: BotSpec | None = None,
        unfurls_allowed: bool = False,
        **overrides: Any,
    ) -> AsyncIterator[RunningBot]:
        target = fake or fake_discord
        runtime = runtime_factory(
            "arcade",
            spec=spec,
            port=0,
            parley_shutdown_grace=2.0,
            parley_queue=queue,
            **LOOPBACK,
            **(runtime_settings or {}),
        )
        async with runtime as rt:
            settings = discord_settings(target, **overrides)
            deps = EdgeDeps.of(rt)
            rt.ops.deliveries.register("discord", DiscordDelivery(deps, settings))  # as `parley run` does
            adapter = DiscordAdapter(deps, settings)
            stop = asyncio.Event()
            service = serve(rt, [("discord", adapter)], workers=queue, stop=stop, handle_signals=False)
            serving = asyncio.create_task(service, name="test:parley-run")
            try:
                if wait_ready:
                    ready = asyncio.create_task(adapter.ready.wait())
                    done, _ = await asyncio.wait({ready, serving}, timeout=15, return_when="FIRST_COMPLETED")
                    if ready not in done:
                        ready.cancel()
                        if serving in done:
                            serving.result()  # raise what stopped the adapter
                        raise TimeoutError("the Discord adapter did not become ready")
                yield RunningBot(adapter, rt, target, serving)
            finally:
                stop.set()
                await asyncio.gather(serving, return_exceptions=True)
                await adapter.aclose()
        assert_mention_safe(target)
        if not unfurls_allowed:
            assert target.unfurls == [], f"links Discord would preview: {target.unfurls}"

    return start


@asynccontextmanager
async def gateway_and_worker(
    runtime_factory: RuntimeFactory, settings: DiscordSettings
) -> AsyncIterator[DiscordAdapter]:
    """``parley run --adapters-only`` in one runtime and ``--workers-only`` in another, served until the
    block ends; yields the gateway side's adapter once it is connected."""
    ops = {"port": 0, "parley_shutdown_grace": 2.0, **LOOPBACK}
    async with runtime_factory("arcade", **ops) as gateway_rt, runtime_factory("arcade", **ops) as worker_rt:
        worker_rt.ops.deliveries.register("discord", DiscordDelivery(EdgeDeps.of(worker_rt), settings))
        gateway = EdgeDeps.of(gateway_rt)
        gateway_rt.ops.deliveries.register("discord", DiscordDelivery(gateway, settings))
        adapter = DiscordAdapter(gateway, settings)
        stop = asyncio.Event()
        front = asyncio.create_task(
            serve(gateway_rt, [("discord", adapter)], workers=False, stop=stop, handle_signals=False)
        )
        worker = asyncio.create_task(serve(worker_rt, [], workers=True, stop=stop, handle_signals=False))
        try:
            await asyncio.wait_for(adapter.ready.wait(), 15)
            yield adapter
        finally:
            stop.set()
            await asyncio.gather(front, worker, return_exceptions=True)
            await adapter.aclose()
