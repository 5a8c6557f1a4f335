"""``parley run --bot arcade`` and ``parley check --bot arcade`` as a user runs them, against the fakes (one
real process: the run stopped by SIGTERM; the rest in-process)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

import adapters.discord as discord_adapter
from adapters.common.deps import EdgeDeps
from tests.cli import parley
from tests.conftest import RuntimeFactory
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI


def _env(fake: FakeDiscord, fake_openai: FakeOpenAI, redis_url: str, **extra: str) -> dict[str, str]:
    keep = {
        k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "OPENAI_", "REDIS_", "PARLEY_"))
    }
    return {
        **keep,
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_URL": fake.api_url,
        "DISCORD_GUILD_READY_TIMEOUT": "0.05",
        "REDIS_URL": redis_url,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_API_KEY": "test-key",
        "PARLEY_LOG_FORMAT": "json",
        **extra,
    }


async def _parley(*args: str, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.slow
async def test_parley_run_serves_discord_and_stops_on_sigterm(
    fake_discord: FakeDiscord, fake_openai: FakeOpenAI, redis_url: str, tmp_path: Path
) -> None:
    fake = fake_discord
    proc = await _parley("run", "--bot", "arcade", env=_env(fake, fake_openai, redis_url), cwd=tmp_path)
    try:
        await fake.wait_ready(within=90)  # a limit, not a wait: a loaded machine starts Python slowly
        await fake.send_message("hello from the CLI test", mention_bot=True)
        await fake.wait_for(lambda: fake.bot_messages(), within=15)
        await fake.wait_for(lambda: fake.bot_messages()[-1]["content"] == "You said: hello from the CLI test")
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"discord_ready" in err
    assert b"hello from the CLI test" not in err  # message bodies never reach the logs


async def test_parley_run_with_a_bad_token_exits_with_one_clear_line(
    fake_discord: FakeDiscord, fake_openai: FakeOpenAI, redis_url: str
) -> None:
    env = {
        "DISCORD_TOKEN": "wrong",
        "DISCORD_API_URL": fake_discord.api_url,
        "REDIS_URL": redis_url,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_API_KEY": "test-key",
    }
    code, _out, err = await parley("run", "--bot", "arcade", env=env)
    assert code == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("parley: config error: DISCORD_TOKEN")
    assert "wrong" not in err  # never echo a secret


async def test_check_reports_token_and_intent_problems(
    runtime_factory: RuntimeFactory, fake_discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    mp = monkeypatch
    mp.setenv("DISCORD_API_URL", fake_discord.api_url)
    async with runtime_factory("arcade") as rt:
        mp.setenv("DISCORD_TOKEN", fake_discord.token)
        deps = EdgeDeps.of(rt)

        async def check() -> list[str]:  # settings are read once per `parley check`: read them again
            return await discord_adapter.check(deps, discord_adapter.load_settings(rt.bot))

        assert await check() == []
        mp.setenv("DISCORD_MESSAGE_CONTENT", "true")
        (problem,) = await check()
        assert "Message Content intent" in problem
        mp.setenv("DISCORD_TOKEN", "wrong")
        (problem,) = await check()
        assert problem.startswith("DISCORD_TOKEN")
        mp.delenv("DISCORD_TOKEN")
        (problem,) = await check()
        assert "DISCORD_TOKEN is not set" in problem
