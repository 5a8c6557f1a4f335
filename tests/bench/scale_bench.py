"""Scale-out benchmark: queue throughput with 1 vs 2 worker processes against an LLM of fixed latency.

Each worker process is ``parley run --workers-only``'s code path (:func:`core.ops.service.serve`) with an
in-process LLM that waits ``--latency`` seconds and answers, and ``PARLEY_WORKERS`` turns in flight. This
process enqueues ``--turns`` turns (one per conversation, as many users do) through the real Dispatcher and
times them until every reply is delivered. Prints a table and writes JSON; figures, not assertions.

    python -m tests.bench.scale_bench                       # 1 and 2 workers
    python -m tests.bench.scale_bench --workers 1 2 4 --turns 600 --latency 0.2 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog

from bots.loader import load_bot
from core.bot import BotSpec
from core.llm import LLMDelta, LLMEnd, LLMEvent, LLMRequest
from core.logging import configure_logging
from core.ops.jobs import Job
from core.ops.service import serve
from core.redis_server import RedisServer
from core.runtime import open_runtime
from core.settings import Settings
from core.types import Author, Place, ReplyDone, ReplyEvent, Turn, Usage
from tests.appsettings import make_app
from tests.scale.helpers import WorkerProcess, eventually

DONE = "bench:done"
LATENCIES = "bench:latency"
ROOT = Path(__file__).resolve().parents[2]


class FixedLatencyLLM:
    """Waits ``latency`` seconds (time to first token), then streams a short answer."""

    def __init__(self, latency: float) -> None:
        self.latency = latency

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        await asyncio.sleep(self.latency)
        for piece in ("A short", " answer."):
            yield LLMDelta(piece)
        yield LLMEnd("stop", Usage(40, 4))

    async def aclose(self) -> None:
        return None


class CountingDelivery:
    """Counts delivered replies in Redis, with each turn's enqueue-to-reply latency."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._r = client

    async def deliver(self, job: Job, events: AsyncIterator[ReplyEvent]) -> None:
        async for event in events:
            if isinstance(event, ReplyDone):
                async with self._r.pipeline(transaction=False) as pipe:
                    pipe.rpush(LATENCIES, time.time() - job.enqueued_at)
                    pipe.incr(DONE)
                    await pipe.execute()

    async def aclose(self) -> None:
        return None


def bench_spec() -> BotSpec:
    """arcade without per-user/channel limits, token quotas or the moderation endpoint: the figures are the
    queue's and the workers'."""
    spec = load_bot("arcade")
    cfg = spec.config
    off = {
        "user_rate": [],
        "channel_rate": [],
        "user_daily_tokens": 0,
        "workspace_daily_tokens": 0,
        "max_concurrent_per_workspace": 0,
    }
    limits = cfg.limits.model_copy(
        update={k: v for k, v in off.items() if k in type(cfg.limits).model_fields}
    )
    moderation = cfg.moderation
    if "endpoint" in type(moderation).model_fields:
        moderation = moderation.model_copy(update={"endpoint": False})
    memory = cfg.memory.model_copy(update={"summary": False})
    return replace(
        spec, config=cfg.model_copy(update={"limits": limits, "moderation": moderation, "memory": memory})
    )


# ---------------------------------------------------------------------- worker process


async def worker(latency: float) -> int:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    configure_logging(settings)
    async with open_runtime(bench_spec(), make_app(settings), llm=FixedLatencyLLM(latency)) as rt:
        rt.ops.deliveries.register("bench", CountingDelivery(rt.redis))
        return await serve(rt, [], workers=True)


# ---------------------------------------------------------------------- driver


def worker_env(url: str, concurrency: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "OPENAI_", "REDIS_"))}
    env.update(
        {
            "REDIS_URL": url,
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # never called: the LLM is in-process
            "PARLEY_WORKERS": str(concurrency),
            "PARLEY_OPS_HOST": "127.0.0.1",
            "PARLEY_HTTP_HOST": "127.0.0.1",
            "PARLEY_OPS_PORT": "0",
            "PORT": "0",
            "PARLEY_LOG_LEVEL": "INFO",  # the driver waits for "worker_started"
            "PARLEY_LOG_FORMAT": "json",
            "TIKTOKEN_CACHE_DIR": "",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def bench_turn(i: int) -> Turn:
    return Turn(
        author=Author(f"user-{i}", f"User {i}"),
        place=Place("bench", "w1", f"c{i % 50}", f"t{i}"),
        text=f"Question number {i}: what is on the menu today?",
        event_id=f"ev-{i}",
    )


class _NoDelivery:
    async def deliver(self, job: Job, events: AsyncIterator[ReplyEvent]) -> None:
        async for _ in events:
            pass

    async def aclose(self) -> None:
        return None


async def run_once(
    url: str, workers: int, turns: int, latency: float, concurrency: int, logs: Path
) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    await client.flushdb()
    env = worker_env(url, concurrency)
    argv = ["-m", "tests.bench.scale_bench", "--worker", "--latency", str(latency)]
    procs = [WorkerProcess(env, logs / f"w{workers}-{n}.log", argv=argv) for n in range(workers)]
    try:
        for proc in procs:
            await proc.ready(within=60)
        settings = Settings(_env_file=None, redis_url=url, openai_base_url="http://127.0.0.1:9/v1")  # type: ignore[call-arg]
        async with open_runtime(bench_spec(), make_app(settings), llm=FixedLatencyLLM(latency)) as rt:
            rt.ops.deliveries.register("bench", _NoDelivery())  # only used for "busy" notices
            started = time.perf_counter()
            for i in range(turns):
                await rt.dispatcher.dispatch(bench_turn(i))
            enqueued = time.perf_counter() - started

            async def all_delivered() -> bool:
                return int(await client.get(DONE) or 0) >= turns

            await eventually(all_delivered, within=600, what="every reply", step=0.005)
            elapsed = time.perf_counter() - started
        latencies = sorted(float(x) for x in await client.lrange(LATENCIES, 0, -1))  # type: ignore[misc]
    finally:
        for proc in procs:
            proc.signal(signal.SIGTERM)
        for proc in procs:
            await proc.wait(within=30)
            proc.close()
        await client.aclose()
    return {
        "workers": workers,
        "concurrency_per_worker": concurrency,
        "llm_latency_s": latency,
        "turns": turns,
        "enqueue_s": round(enqueued, 3),
        "elapsed_s": round(elapsed, 3),
        "turns_per_s": round(turns / elapsed, 1),
        "ideal_turns_per_s": round(workers * concurrency / latency, 1) if latency else 0.0,
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "latency_p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 1),
    }


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="parley-scale-bench-") as tmp:
        server = RedisServer(Path(tmp) / "redis", tcp=True, appendonly=False)
        await asyncio.to_thread(server.start)
        try:
            results = [
                await run_once(server.url, n, args.turns, args.latency, args.concurrency, Path(tmp))
                for n in args.workers
            ]
        finally:
            await asyncio.to_thread(server.stop)
    return results


def report(results: list[dict[str, Any]]) -> str:
    first = results[0]
    base = first["turns_per_s"]
    lines = [
        "Parley scale-out benchmark: queue throughput vs worker processes (LLM with fixed latency)",
        f"{first['turns']} turns, one per conversation; LLM latency {first['llm_latency_s'] * 1000:.0f} ms;"
        f" {first['concurrency_per_worker']} turns in flight per worker",
        "",
        f"{'workers':>7} {'seconds':>8} {'turns/s':>8} {'ideal':>7} {'speed-up':>8} {'p50 ms':>8}"
        f" {'p95 ms':>8}",
    ]
    for r in results:
        lines.append(
            f"{r['workers']:>7} {r['elapsed_s']:>8.2f} {r['turns_per_s']:>8.1f}"
            f" {r['ideal_turns_per_s']:>7.1f} {r['turns_per_s'] / base:>7.2f}x"
            f" {r['latency_p50_ms']:>8.1f} {r['latency_p95_ms']:>8.1f}"
        )
    return "\n".join(lines)


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker process counts to compare"
    )
    parser.add_argument("--turns", type=int, default=320)
    parser.add_argument("--latency", type=float, default=0.2, help="LLM latency in seconds")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="PARLEY_WORKERS: turns in flight per worker"
    )
    parser.add_argument("--json", type=Path, default=ROOT / ".parley" / "bench-scale.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return asyncio.run(worker(args.latency))
    results = asyncio.run(main(args))
    print(report(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\n(written to {args.json})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
