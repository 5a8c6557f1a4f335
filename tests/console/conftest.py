"""Fixtures for the console tests: a real runtime on the test Redis with the console mounted on its ops
server (127.0.0.1, a free port), and an HTTP client that signs in through the login form."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from adapters.discord import link_for as discord_link
from adapters.slack import link_for as slack_link
from core.console.mount import mount_console
from core.console.settings import ConsoleSettings
from core.console.stats import DailyStats
from core.runtime import Runtime
from tests.conftest import RuntimeFactory

PASSWORD = "correct horse battery staple"
RUNTIME = {"port": 0, "parley_ops_port": 0, "parley_ops_host": "127.0.0.1", "parley_shutdown_grace": 0.5}
LINKS = {"slack": slack_link, "discord": discord_link}  # as `parley run` and `parley console` give them
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_settings(**overrides: Any) -> ConsoleSettings:
    values: dict[str, Any] = {"parley_console_password": PASSWORD}
    values.update(overrides)
    return ConsoleSettings(_env_file=None, **values)  # type: ignore[call-arg]


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)


@dataclass
class Served:
    runtime: Runtime
    stats: DailyStats
    base: str  # http://127.0.0.1:PORT/console


async def sign_in(
    session: aiohttp.ClientSession, base: str, password: str = PASSWORD
) -> aiohttp.ClientResponse:
    async with session.get(f"{base}/login") as page:
        token = csrf_of(await page.text())
    async with session.post(
        f"{base}/login", data={"csrf": token, "password": password}, allow_redirects=False
    ) as response:
        await response.read()
        return response


ServeConsole = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve_console(runtime_factory: RuntimeFactory) -> AsyncIterator[ServeConsole]:
    """``await serve_console(bot="support", runtime=None, platforms=None, **console_settings)``: the console
    on a started ops server, with both platforms' links (a given runtime is used as it is, its settings given
    to ``runtime_factory(app={"console": ...})``, and its server started by the caller)."""
    async with AsyncExitStack() as stack:

        async def start(
            bot: str = "support",
            *,
            runtime: Runtime | None = None,
            platforms: dict[str, object] | None = None,
            **overrides: Any,
        ) -> Served:
            own = runtime is None
            if runtime is None:
                app = {"console": console_settings(**overrides), "platforms": platforms}
                runtime = await stack.enter_async_context(runtime_factory(bot, app=app, **RUNTIME))
            else:  # a given runtime was built with its console settings (runtime_factory's app=)
                assert not (overrides or platforms), "give a runtime's settings to runtime_factory(app=...)"
            await mount_console(runtime, LINKS)
            assert runtime.stats is not None
            if own:
                await runtime.ops.http.start()
                stack.push_async_callback(runtime.ops.http.aclose)
            return Served(runtime, runtime.stats, "")

        yield start


def base_url(served: Served) -> str:
    http = served.runtime.ops.http
    port = http.bound.get("/console") or http.bound.get("ops") or http.bound["public"]
    return f"http://127.0.0.1:{port}/console"


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


# The platforms' fixtures: fake Discord (the outbox test); fake Slack and a running adapter (browser tests).
from tests.discord.conftest import fake_discord  # noqa: E402, F401
from tests.slack.conftest import slack, start_slack  # noqa: E402, F401


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for every browser test of the run (each starts by clearing its cookies)."""
    from tests.console.browser import chromium_paths, start_chromium

    chromium_paths()  # skips, saying what is missing
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()
