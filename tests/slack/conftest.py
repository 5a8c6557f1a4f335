"""Fixtures for the Slack adapter tests: a fake Slack on loopback and running adapters on real parts.

``start_slack(...)`` builds the real adapter (bolt, slack_sdk) for the ``support`` bot on a real runtime
(real redis-server, fake OpenAI server from tests/conftest.py) and runs it the way ``parley run`` does
(``core.ops.service.serve``: the HTTP server on 127.0.0.1:0, queue workers when the queue is on), in HTTP
or Socket Mode against the fake Slack, and stops it at the end of the test.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.common.deps import EdgeDeps
from adapters.slack.app import SlackAdapter
from adapters.slack.delivery import SlackDelivery
from adapters.slack.settings import Mode, SlackBotConfig, SlackSettings, choose_mode, with_environment
from bots.loader import load_bot
from core.bot import BotSpec
from core.ops.service import serve
from core.runtime import Runtime
from tests.conftest import RuntimeFactory
from tests.fakes.slack import FakeSlack, SlackSender
from tests.net import LOOPBACK

SIGNING_SECRET = "test-signing-secret"
SUPPORT_CHANNEL = "C0SUPPORT"
ADMIN = "U0ADMIN"

# Runtime settings for the adapter tests: the HTTP server on a free loopback port, quick shutdown.
RUNTIME = {"port": 0, "parley_shutdown_grace": 0.5, **LOOPBACK}


def support_spec() -> BotSpec:
    """The support bot as shipped, but with per-user/channel rate limits and quotas off: these tests send
    several messages a second from one user on purpose (the limits have their own tests)."""
    spec = load_bot("support")
    limits = spec.config.limits
    off = {
        "user_rate": [],
        "channel_rate": [],
        "user_daily_tokens": 0,
        "workspace_daily_tokens": 0,
        "max_concurrent_per_workspace": 0,
    }
    known = type(limits).model_fields
    relaxed = limits.model_copy(update={k: v for k, v in off.items() if k in known})
    return dataclasses.replace(spec, config=spec.config.model_copy(update={"limits": relaxed}))


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` until it holds (for state outside the fake Slack, which notifies on its own)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling state that has no event to wait on
            await asyncio.sleep(0.01)


@dataclass
class Running:
    adapter: SlackAdapter
    runtime: Runtime
    slack: FakeSlack
    sender: SlackSender
    serving: asyncio.Task[int]
    stop: asyncio.Event

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.port}"

    @property
    def delivery(self) -> SlackDelivery:
        return self.adapter.delivery

    def _idle(self) -> bool:
        shown = sum(self.adapter.outcomes[o] for o in ("queued", "direct", "fallback", "busy"))
        return (
            not len(self.adapter.tasks)
            and not len(self.runtime.dispatcher.tasks)
            and (self.delivery.delivered >= shown)
        )

    async def settle(self, within: float = 10.0) -> None:
        """Wait until every event the adapter took has been answered (or dropped on purpose)."""
        await eventually(self._idle, within)


async def settle_together(*apps: Running, within: float = 10.0) -> None:
    """Wait until instances sharing one Redis have answered every event they took, whichever answered it."""

    def idle() -> bool:
        shown = sum(a.adapter.outcomes[o] for a in apps for o in ("queued", "direct", "fallback", "busy"))
        busy = any(len(a.adapter.tasks) or len(a.runtime.dispatcher.tasks) for a in apps)
        return not busy and sum(a.delivery.delivered for a in apps) >= shown

    await eventually(idle, within)


def slack_settings(slack: FakeSlack, **overrides: Any) -> SlackSettings:
    values: dict[str, Any] = {
        "slack_bot_token": slack.bot_token,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_app_token": None,
        "slack_client_id": None,
        "slack_client_secret": None,
        "slack_redirect_uri": None,
        "slack_handoff_channel": None,
        "slack_api_url": slack.api_url,
        "slack_mode": "auto",
    }
    values.update(overrides)
    return SlackSettings(_env_file=None, **values)  # type: ignore[call-arg]


def bot_config(**overrides: Any) -> SlackBotConfig:
    values: dict[str, Any] = {
        "edit_interval": 0.2,
        "shutdown_grace": 0.0,
        "admins": [ADMIN],
        "handoff_channel": SUPPORT_CHANNEL,
        "suggested_prompts": [{"title": "Track an order", "message": "Where is my order?"}],
    }
    values.update(overrides)
    return SlackBotConfig.model_validate(values)


StartSlack = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_slack(runtime_factory: RuntimeFactory, slack: FakeSlack) -> AsyncIterator[StartSlack]:
    async with AsyncExitStack() as stack:

        async def start(
            *,
            config: SlackBotConfig | None = None,
            runtime: Runtime | None = None,
            queue: bool = False,
            runtime_settings: dict[str, Any] | None = None,
            **settings: Any,
        ) -> Running:
            if runtime is None:
                runtime = await stack.enter_async_context(
                    runtime_factory(
                        spec=support_spec(), parley_queue=queue, **RUNTIME, **(runtime_settings or {})
                    )
                )
            s = slack_settings(slack, **settings)
            mode = choose_mode(s)
            deps = EdgeDeps.of(runtime)
            # env over bot.toml: the SLACK_* overrides of [slack] values, applied as load_settings does
            delivery = SlackDelivery(deps, s, with_environment(config or bot_config(), s))
            runtime.ops.deliveries.register("slack", delivery)
            adapter = SlackAdapter(deps, s, delivery.config, mode, delivery)
            stop = asyncio.Event()
            workers = runtime.ops.queue is not None
            serving = asyncio.create_task(
                serve(runtime, [("slack", adapter)], workers=workers, stop=stop, handle_signals=False),
                name="slack-service",
            )

            async def shut_down() -> None:
                stop.set()
                await asyncio.gather(serving, return_exceptions=True)
                await adapter.aclose()

            stack.push_async_callback(shut_down)
            ready = asyncio.create_task(adapter.ready.wait())
            await asyncio.wait({ready, serving}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            if serving.done():
                ready.cancel()
                serving.result()  # raises the start-up error
            assert adapter.ready.is_set(), "adapter did not start"
            url = f"http://127.0.0.1:{adapter.port}/slack/events" if mode is not Mode.SOCKET else ""
            sender = await stack.enter_async_context(SlackSender(url, SIGNING_SECRET))
            return Running(adapter, runtime, slack, sender, serving, stop)

        yield start
