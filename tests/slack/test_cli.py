"""``parley run --bot support`` as an operator runs it, in HTTP and Socket Mode, against the fakes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack import FakeSlack, SlackSender
from tests.fakes.slack import requests as rq
from tests.slack.conftest import SIGNING_SECRET


def _env(slack: FakeSlack, fake_openai: FakeOpenAI, redis_url: str, **extra: str) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "OPENAI_", "REDIS_", "PARLEY_", "DISCORD_")) and k != "PORT"
    }
    return {
        **keep,
        "SLACK_API_URL": slack.api_url,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "PARLEY_OPS_HOST": "127.0.0.1",
        "PARLEY_HTTP_HOST": "127.0.0.1",
        "PARLEY_OPS_PORT": "0",
        "PORT": "0",
        "REDIS_URL": redis_url,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_API_KEY": "test-key",
        "PARLEY_LOG_FORMAT": "json",
        "PARLEY_MCP": "false",  # the support bot's orders server (a process of its own) is not under test
        **extra,
    }


async def _run(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots",
        "run",
        "--bot",
        "support",
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _log_event(proc: asyncio.subprocess.Process, event: str, seen: list[bytes]) -> dict[str, object]:
    assert proc.stderr is not None
    async with asyncio.timeout(90):  # a limit, not a wait: a loaded machine starts Python slowly
        while True:
            line = await proc.stderr.readline()
            if not line:
                raise AssertionError(b"".join(seen).decode()[-3000:])
            seen.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                return record


async def _stop(proc: asyncio.subprocess.Process, seen: list[bytes]) -> bytes:
    try:
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return b"".join(seen) + err


@pytest.mark.slow
async def test_parley_run_http_mode(
    slack: FakeSlack, fake_openai: FakeOpenAI, redis_url: str, tmp_path: Path
) -> None:
    env = _env(slack, fake_openai, redis_url, SLACK_SIGNING_SECRET=SIGNING_SECRET)
    proc = await _run(env, tmp_path)
    seen: list[bytes] = []
    try:
        listening = await _log_event(proc, "http_listening", seen)
        if listening["server"] != "public":  # the ops server (its own port) comes up first
            listening = await _log_event(proc, "http_listening", seen)
        assert listening["server"] == "public"
        url = f"http://127.0.0.1:{listening['port']}/slack/events"
        async with SlackSender(url, SIGNING_SECRET) as sender:
            sent = await sender.event(rq.app_mention("hello from the CLI", ts="1700000500.000100"))
            assert sent.status == 200
        await slack.wait_for(lambda: bool(slack.bot_messages()) and not slack.bot_messages()[0].streaming, 15)
        assert slack.bot_messages()[0].shown == "You said: hello from the CLI"
    finally:
        logs = await _stop(proc, seen)
    assert proc.returncode == 0, logs.decode()[-3000:]
    assert b"hello from the CLI" not in logs  # message bodies never reach the logs
    assert slack.bot_token.encode() not in logs  # nor secrets


@pytest.mark.slow
async def test_parley_run_socket_mode(
    slack: FakeSlack, fake_openai: FakeOpenAI, redis_url: str, tmp_path: Path
) -> None:
    proc = await _run(_env(slack, fake_openai, redis_url, SLACK_APP_TOKEN=slack.app_token), tmp_path)
    seen: list[bytes] = []
    try:
        await _log_event(proc, "slack_socket_connected", seen)
        await slack.wait_for(lambda: slack.socket_connections == 1, 15)
        env = await slack.send_envelope(rq.dm("socket hello", channel="D0CLI"))
        await slack.wait_ack(env)
        want = "You said: socket hello"
        await slack.wait_for(lambda: [m.text for m in slack.bot_messages("D0CLI")] == [want], 15)
    finally:
        logs = await _stop(proc, seen)
    assert proc.returncode == 0, logs.decode()[-3000:]
    assert slack.app_token.encode() not in logs
