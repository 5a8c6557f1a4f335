"""SIGTERM while a dependency is gone: ``parley run`` as an operator runs it (a real process against the
fakes), one case per dependency. Shared by tests/scale/test_shutdown.py (grace 1 s, asserts on what the
process logged) and ``make chaos`` (the default grace of 7 s, prints the seconds).

Cases: ``redis``, ``discord``, ``redis+discord``, ``llm`` (``--bot arcade``, Discord) and ``slack``
(``--bot support``, Socket Mode). In each a reply is streaming when the dependency goes: the LLM answers its
first words, then goes on slowly (a hung provider).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from core.redis_server import RedisServer
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.scale.helpers import ROOT

CASES = ("redis", "discord", "redis+discord", "llm", "slack")
# A bound for a loaded machine, not a target: a hang (the bug: > 45 s) fails; the figures are printed.
BOUND = 30.0


@dataclass
class Stopped:
    gone: str
    returncode: int | None  # None: still running BOUND seconds after SIGTERM (then killed)
    seconds: float  # SIGTERM -> the process exited
    logged: float | None  # the seconds the process's ``shut_down`` record gives (signal -> closed)
    log: str

    @property
    def handed_back(self) -> bool:
        return '"worker_handed_back"' in self.log

    def line(self) -> str:
        logged = "-" if self.logged is None else f"{self.logged:.1f}s"
        return (
            f"{self.gone:<16}{self.seconds:>9.1f}s{logged:>11}"
            f"{'yes' if self.handed_back else 'no':>13}{self.returncode!s:>7}"
        )


HEADER = f"{'gone':<16}{'exit':>10}{'shut_down':>11}{'handed back':>13}{'code':>7}"


def _env(llm: FakeOpenAI, redis_url: str, platform: dict[str, str], grace: float) -> dict[str, str]:
    prefixes = ("DISCORD_", "SLACK_", "OPENAI_", "REDIS_", "PARLEY_", "EMBEDDINGS_")
    keep = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k != "PORT"}
    return {
        **keep,
        **platform,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MODEL": "fake-model",
        "PARLEY_LLM_MAX_RETRIES": "0",
        "PARLEY_LOG_FORMAT": "json",
        "PARLEY_OPS_PORT": "0",
        "PARLEY_OPS_HOST": "127.0.0.1",
        "PARLEY_HTTP_HOST": "127.0.0.1",
        "PORT": "0",
        "TIKTOKEN_CACHE_DIR": "",
        "PYTHONUNBUFFERED": "1",
        "PARLEY_SHUTDOWN_GRACE": str(grace),
    }


@contextlib.asynccontextmanager
async def _bot(bot: str, env: dict[str, str], folder: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with (folder / "run.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bots", "run", "--bot", bot, env=env, cwd=folder, stdout=log, stderr=log
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _sigterm(gone: str, proc: asyncio.subprocess.Process, log: Path) -> Stopped:
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), BOUND)
    seconds = time.monotonic() - start
    text = await asyncio.to_thread(log.read_text, errors="replace")
    return Stopped(gone, proc.returncode, seconds, _logged(text), text)


def _logged(text: str) -> float | None:
    for line in reversed(text.splitlines()):
        if '"shut_down"' in line:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                return float(json.loads(line)["seconds"])
    return None


async def sigterm_with(gone: str, folder: Path, grace: float) -> Stopped:
    """Start the bot (its own Redis and fake LLM), get a reply streaming, take ``gone`` away, SIGTERM;
    what the process did."""
    if gone not in CASES:
        raise ValueError(f"unknown case {gone!r} (known: {', '.join(CASES)})")
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    redis = RedisServer(folder / "redis", tcp=True, appendonly=False)
    await asyncio.to_thread(redis.start)
    try:
        async with FakeOpenAI() as llm:
            llm.queue(Reply("Once upon a time " * 100, chunk_chars=4, delay=0.2))
            if gone == "slack":
                return await _slack_gone(llm, redis, folder, grace)
            return await _discord_case(gone, llm, redis, folder, grace)
    finally:
        await asyncio.to_thread(redis.stop)


async def _discord_case(
    gone: str, llm: FakeOpenAI, redis: RedisServer, folder: Path, grace: float
) -> Stopped:
    async with FakeDiscord() as discord:
        platform = {
            "DISCORD_TOKEN": discord.token,
            "DISCORD_API_URL": discord.api_url,
            "DISCORD_GUILD_READY_TIMEOUT": "0.05",
        }
        async with _bot("arcade", _env(llm, redis.url, platform, grace), folder) as proc:
            await discord.wait_ready(within=60)
            await discord.send_message("tell me a story", mention_bot=True)
            await discord.wait_for(lambda: discord.bot_messages(), within=30)  # the reply is streaming
            if "redis" in gone:
                await asyncio.to_thread(redis.kill)
            if "discord" in gone:
                await discord.aclose()
            if gone == "llm":
                await llm.stop()
            return await _sigterm(gone, proc, folder / "run.log")


async def _slack_gone(llm: FakeOpenAI, redis: RedisServer, folder: Path, grace: float) -> Stopped:
    """Socket Mode: the fake Slack (websocket and Web API) stops while a reply streams; the socket client
    reconnecting to nothing must not hold the process, and the unanswered turn goes back to the queue."""
    slack = FakeSlack()
    await slack.start()
    try:
        platform = {
            "SLACK_APP_TOKEN": slack.app_token,
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_API_URL": slack.api_url,
            "PARLEY_MCP": "false",  # the orders server (a process of its own) is not under test
        }
        async with _bot("support", _env(llm, redis.url, platform, grace), folder) as proc:
            await slack.wait_for(lambda: slack.socket_connections == 1, 60)
            await slack.send_envelope(rq.dm("where is my order?", channel="D0GONE"))
            await slack.wait_for(lambda: bool(slack.bot_messages("D0GONE")), 30)  # the reply is streaming
            await slack.aclose()
            # The bot sees Slack gone (its next stream call fails) before the signal, as in production.
            await _log_contains(folder / "run.log", '"reply_delivery_failed"', within=30)
            return await _sigterm("slack", proc, folder / "run.log")
    finally:
        await slack.aclose()


async def _log_contains(log: Path, text: str, within: float) -> None:
    deadline = time.monotonic() + within
    while text not in await asyncio.to_thread(log.read_text, errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text} not logged within {within}s")
        await asyncio.sleep(0.1)
