"""``parley console --bot NAME`` as a user runs it, on the test Redis, no LLM needed: the smoke test serves
from a real process (stopped with SIGTERM), the refusal runs in-process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import aiohttp
import pytest

from tests.cli import ROOT, parley, scratch
from tests.console.conftest import PASSWORD, sign_in


def _env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "REDIS_", "SLACK_", "DISCORD_", "PARLEY_CONSOLE_"))
    }
    env.update({"TIKTOKEN_CACHE_DIR": "", "PARLEY_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)})
    env.update(
        {"REDIS_URL": redis_url, "PORT": "0", "PARLEY_OPS_PORT": "0", "PARLEY_OPS_HOST": "127.0.0.1", **extra}
    )
    return env


async def test_without_a_password_it_says_so(redis_url: str) -> None:
    code, _, err = await parley("console", "--bot", "support", env={"REDIS_URL": redis_url})
    assert code == 2
    assert "PARLEY_CONSOLE_PASSWORD" in err and "not set" in err


@pytest.mark.slow
async def test_serves_the_console_until_stopped(redis_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots",
        "console",
        "--bot",
        "support",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(redis_url, PARLEY_CONSOLE_PASSWORD=PASSWORD),
        cwd=scratch(),
    )
    try:
        assert proc.stdout is not None
        url = ""
        async with asyncio.timeout(90):  # a limit, not a wait: a loaded machine starts Python slowly
            while not url:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    assert proc.stderr is not None
                    raise AssertionError((await proc.stderr.read()).decode()[-3000:])
                if found := re.search(r"parley console: (http://\S+)", line):
                    url = found.group(1).rstrip("/")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            assert (await sign_in(client, url)).status == 303
            async with client.get(f"{url}/overview") as page:
                assert page.status == 200
                assert "No turns recorded" in await page.text()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert PASSWORD not in err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
