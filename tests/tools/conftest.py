"""Tools harness: the real OpenAI client against the fake server, real Redis, the real safety event log."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bots.support.tools import build_db
from core.keys import KeySpace
from core.llm import OpenAILLM
from core.ops.metrics import Metrics
from core.safety.events import EventLog
from core.tools.audit import ToolAudit
from core.tools.config import ToolsConfig
from core.tools.loop import ToolLoop
from core.tools.pending import PendingStore
from core.tools.registry import ToolRegistry
from core.tools.spec import Tool
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LoopKit:
    loop: ToolLoop
    registry: ToolRegistry
    events: EventLog
    metrics: Metrics
    llm: OpenAILLM
    fake: FakeOpenAI


@pytest.fixture
def support_db(tmp_path: Path) -> Path:
    return build_db(tmp_path / "support.db")


LoopFactory = Callable[..., Any]


@pytest.fixture
async def loop_factory(
    fake_openai: FakeOpenAI, redis_client: aioredis.Redis
) -> AsyncIterator[Callable[..., Any]]:
    """``async with loop_factory(tools=[...], config=ToolsConfig(...)) as kit:`` a ready ToolLoop."""
    opened: list[tuple[ToolRegistry, OpenAILLM]] = []
    keys = KeySpace("toolbot")

    async def factory(
        *, tools: list[Tool] | None = None, config: ToolsConfig | None = None, **kw: Any
    ) -> LoopKit:
        settings = make_settings(openai_base_url=fake_openai.base_url, openai_api_key="test-key")
        llm = OpenAILLM(settings)
        registry = ToolRegistry(config or ToolsConfig(), tools or [])
        await registry.__aenter__()
        opened.append((registry, llm))
        events = EventLog(redis_client, keys, maxlen=1000)
        metrics = Metrics("toolbot")
        audit = ToolAudit(events=events, metrics=metrics, redact=kw.pop("redact", lambda t: t))
        pending = PendingStore(
            redis_client,
            keys,
            ttl_seconds=registry.config.confirm_ttl_seconds,
            signer=kw.pop("signer", None),
        )
        loop = ToolLoop(llm, registry, pending=pending, audit=audit, redis=redis_client, **kw)
        return LoopKit(loop, registry, events, metrics, llm, fake_openai)

    yield factory
    for registry, llm in opened:
        await registry.aclose()
        await llm.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_mcp(support_db: Path) -> Iterator[str]:
    """The support bot's MCP server as a real subprocess on streamable HTTP; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bots.support.tools", "--http", "--port", str(port), "--db", str(support_db)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the MCP HTTP server did not start")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)
