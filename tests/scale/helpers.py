"""Helpers for the scale-out tests: test Deliveries, settings, turns, subprocess workers, waiting."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bots.loader import load_bot
from core.bot import BotSpec
from core.ops.jobs import Job
from core.ops.worker import TurnWorker
from core.runtime import Runtime
from core.types import Author, Place, ReplyDelta, ReplyDone, ReplyEvent, ReplyResult, Turn
from tests.net import LOOPBACK

ROOT = Path(__file__).resolve().parents[2]
DELIVERED = "test:delivered"  # Redis list of final replies (JSON), written by RedisRecordingDelivery
STARTED = "test:started"  # Redis list of first deltas (JSON): which process started which turn

# Short leases and idle times keep the fault tests fast (production defaults: 10 s, heartbeats every 3 s),
# but not so short that a busy machine (the suite runs in parallel) stalls an event loop past a lease: a 1 s
# lease was lost mid-turn under load and the turn was answered twice.
FAST = {
    "parley_lock_lease": 3.0,
    "parley_lease_heartbeat": 0.5,
    "parley_queue_claim_idle": 1.5,
    "parley_shutdown_grace": 1.0,
    "parley_workers": 8,
    "port": 0,
    **LOOPBACK,
}


def scale_spec(bot: str = "arcade", **memory: Any) -> BotSpec:
    """The bot with per-user/channel rate limits, token quotas and generation caps off (these tests send
    bursts on purpose) and ``memory`` settings changed."""
    spec = load_bot(bot)
    cfg = spec.config
    off: dict[str, Any] = {
        "user_rate": [],
        "channel_rate": [],
        "user_daily_tokens": 0,
        "workspace_daily_tokens": 0,
        "max_concurrent_per_workspace": 0,
    }
    known = type(cfg.limits).model_fields
    limits = cfg.limits.model_copy(update={k: v for k, v in off.items() if k in known})
    config = cfg.model_copy(update={"limits": limits, "memory": cfg.memory.model_copy(update=memory)})
    return dataclasses.replace(spec, config=config)


def turn(
    text: str,
    *,
    thread: str = "t1",
    user: str = "u1",
    event_id: str = "",
    platform: str = "test",
) -> Turn:
    return Turn(
        author=Author(user, "Ada"),
        place=Place(platform, "w1", "c1", thread),
        text=text,
        event_id=event_id,
    )


@dataclass
class Delivered:
    turn_id: str
    text: str
    kind: str
    who: str
    attempt: int
    conversation: str
    route: dict[str, str] = field(default_factory=dict)


class MemoryDelivery:
    """Records final replies in this process (usable while Redis is down)."""

    def __init__(self, who: str = "local") -> None:
        self.who = who
        self.delivered: list[Delivered] = []
        self.started: list[str] = []
        self.arrived = asyncio.Event()

    async def deliver(self, job: Job, events: AsyncIterator[ReplyEvent]) -> None:
        async for event in events:
            if isinstance(event, ReplyDelta) and job.job_id not in self.started:
                self.started.append(job.job_id)
            if isinstance(event, ReplyDone):
                self.delivered.append(_record(job, event.result, self.who))
                self.arrived.set()

    async def wait_for(self, count: int, within: float = 10.0) -> list[Delivered]:
        deadline = time.monotonic() + within
        while len(self.delivered) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected {count} deliveries, got {len(self.delivered)}")
            self.arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)
        return self.delivered

    async def aclose(self) -> None:
        return None


class RedisRecordingDelivery:
    """Records into Redis, so a test can see what worker processes delivered (and which process did)."""

    def __init__(self, client: aioredis.Redis, who: str | None = None) -> None:
        self._r = client
        self.who = who or str(os.getpid())

    async def deliver(self, job: Job, events: AsyncIterator[ReplyEvent]) -> None:
        started = False
        async for event in events:
            if isinstance(event, ReplyDelta) and not started:
                started = True
                await self._r.rpush(STARTED, json.dumps({"turn_id": job.job_id, "who": self.who}))  # type: ignore[misc]
            if isinstance(event, ReplyDone):
                record = _record(job, event.result, self.who)
                await self._r.rpush(DELIVERED, json.dumps(record.__dict__))  # type: ignore[misc]

    async def aclose(self) -> None:
        return None


class FileRecordingDelivery:
    """Appends each final reply as a JSON line to a file (``make chaos``: Redis itself may be down)."""

    def __init__(self, path: Path, who: str | None = None) -> None:
        self._path = path
        self.who = who or str(os.getpid())

    async def deliver(self, job: Job, events: AsyncIterator[ReplyEvent]) -> None:
        async for event in events:
            if isinstance(event, ReplyDone):
                record = {**_record(job, event.result, self.who).__dict__, "at": time.time()}
                line = (json.dumps(record) + "\n").encode()
                fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)  # one small O_APPEND write: lines from processes never interleave
                finally:
                    os.close(fd)

    async def aclose(self) -> None:
        return None


def _record(job: Job, result: ReplyResult, who: str) -> Delivered:
    return Delivered(
        job.job_id,
        result.text,
        result.kind.value,
        who,
        job.attempt,
        job.turn.place.conversation_id,
        dict(job.route.data),
    )


async def read_records(client: aioredis.Redis, key: str = DELIVERED) -> list[dict[str, Any]]:
    raw: list[str] = await client.lrange(key, 0, -1)  # type: ignore[misc]
    return [json.loads(r) for r in raw]


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "condition", step: float = 0.02
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(step)


# ---------------------------------------------------------------------- worker processes


def worker_env(redis_url: str, llm_url: str, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "OPENAI_", "REDIS_"))}
    values = {**FAST, **settings}
    env.update({k.upper(): str(v) for k, v in values.items()})
    env.update(
        {
            "REDIS_URL": redis_url,
            "OPENAI_BASE_URL": llm_url,
            "OPENAI_API_KEY": "test-key",
            "OPENAI_MODEL": "fake-model",
            "PARLEY_LLM_MAX_RETRIES": "0",
            "PARLEY_LOG_FORMAT": "json",
            "PARLEY_LOG_LEVEL": "INFO",
            "TIKTOKEN_CACHE_DIR": "",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


class WorkerProcess:
    """``python -m tests.scale.worker_main``: a real worker process (the code path of
    ``parley run --workers-only``) with a Delivery that records into Redis."""

    def __init__(
        self, env: dict[str, str], log_path: Path, bot: str = "arcade", argv: list[str] | None = None
    ) -> None:
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *(argv or ["-m", "tests.scale.worker_main", "--bot", bot])],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = log_path

    @property
    def pid(self) -> str:
        return str(self.proc.pid)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def wait(self, within: float = 15.0) -> int:
        deadline = time.monotonic() + within
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.pid} did not exit within {within}s:\n{self.output()}")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    async def ready(self, within: float = 40.0) -> None:
        """Wait for its "worker_started" log line (Redis 6.2 lists a consumer only once it got work)."""
        deadline = time.monotonic() + within
        while '"worker_started"' not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {self.pid} did not start:\n{self.output()}")
            await asyncio.sleep(0.05)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@asynccontextmanager
async def running_worker(rt: Runtime, grace: float = 2.0) -> AsyncIterator[TurnWorker]:
    """An in-process queue worker on ``rt`` for the duration of the block."""
    worker = rt.ops.worker(rt.engine)
    task = asyncio.create_task(worker.run(), name="test-worker")
    try:
        yield worker
    finally:
        await worker.shutdown(grace)
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            raise AssertionError(f"worker failed: {task.exception()!r}")
