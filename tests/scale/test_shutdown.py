"""``parley run --bot arcade`` stops on SIGTERM whatever is down: Redis, Discord, the LLM (one test each, real
processes against the fakes), handing back the turn it was answering where Redis allows."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.redis_server import RedisServer
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.scale.helpers import ROOT

# Shutdown ends within PARLEY_SHUTDOWN_GRACE (1 s here, 7 s by default) plus at most 2 s of closing; the
# figures are in `make chaos`. The bound is generous for a loaded machine: a hang (the bug: > 45 s) fails it.
BOUND = 20.0


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", tcp=True, appendonly=False)
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


async def _run(
    discord: FakeDiscord, llm: FakeOpenAI, redis_url: str, tmp_path: Path
) -> asyncio.subprocess.Process:
    keep = {
        k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "OPENAI_", "REDIS_", "PARLEY_"))
    }
    env = {
        **keep,
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": discord.token,
        "DISCORD_API_URL": discord.api_url,
        "DISCORD_GUILD_READY_TIMEOUT": "0.05",
        "REDIS_URL": redis_url,
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MODEL": "fake-model",
        "PARLEY_LLM_MAX_RETRIES": "0",
        "PARLEY_LOG_FORMAT": "json",
        "PARLEY_OPS_PORT": "0",
        "PORT": "0",
        "TIKTOKEN_CACHE_DIR": "",
        "PYTHONUNBUFFERED": "1",
        "PARLEY_SHUTDOWN_GRACE": "1",  # the default (7 s) is measured by `make chaos`
    }
    with (tmp_path / "run.log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bots",
            "run",
            "--bot",
            "arcade",
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )


async def _stop(proc: asyncio.subprocess.Process, log: Path) -> tuple[float, str]:
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    try:
        await asyncio.wait_for(proc.wait(), BOUND)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        text = await asyncio.to_thread(log.read_text)
        raise AssertionError(f"no exit {BOUND}s after SIGTERM:\n{text[-3000:]}") from None
    return time.monotonic() - start, await asyncio.to_thread(log.read_text)


@pytest.mark.parametrize(
    "gone",
    [
        # Both gone is the case that hung; the others each start a process too: `make chaos` runs them.
        "redis+discord",
        pytest.param("redis", marks=pytest.mark.chaos),
        pytest.param("discord", marks=pytest.mark.chaos),
        pytest.param("llm", marks=pytest.mark.chaos),
    ],
)
async def test_sigterm_ends_the_process_whatever_is_down(
    gone: str, private_redis: RedisServer, discord: FakeDiscord, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    # A turn in flight: the LLM answers its first words, then stalls (a hung provider).
    fake_openai.queue(Reply("Once upon a time " * 50, chunk_chars=4, delay=0.2))
    proc = await _run(discord, fake_openai, private_redis.url, tmp_path)
    try:
        await discord.wait_ready(within=30)
        await discord.send_message("tell me a story", mention_bot=True)
        await discord.wait_for(lambda: discord.bot_messages(), within=15)  # the reply is streaming
        if "redis" in gone:
            await asyncio.to_thread(private_redis.kill)
        if "discord" in gone:
            await discord.aclose()
        if gone == "llm":
            await fake_openai.stop()
        _seconds, err = await _stop(proc, tmp_path / "run.log")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert '"shut_down"' in err
    if gone == "discord":  # Redis is up: the unanswered turn went back to the queue
        assert "worker_handed_back" in err
