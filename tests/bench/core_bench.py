"""Core benchmark: engine overhead per turn with a zero-latency in-process LLM and a real redis-server.

Prints a table and writes ``bench-results.json``. Figures, not assertions: compare them with the targets
(p50 core overhead < 1 ms; Redis round trips per turn: 2 on the direct path, <= 6 on the default queued
path; per-turn cost flat within 20% from 10 to 10,000 stored messages).

Round trips are counted by the server: the change of ``total_reads_processed`` in ``INFO stats`` (one read
event per request or pipeline the server receives), less the reads of the measuring ``INFO`` calls and of
the worker's idle loops (blocking XREADGROUP timeouts, maintenance ticks), measured over an idle stretch of
the same length. ``INFO commandstats`` gives the commands behind them.

    make bench            # or: python -m tests.bench.core_bench --turns 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog

from bots.loader import load_bot
from core.llm import LLMDelta, LLMEnd, LLMEvent, LLMRequest
from core.memory import NewMessage
from core.ops.jobs import Job, Route
from core.redis_server import RedisServer
from core.runtime import Runtime, open_runtime
from core.settings import Settings
from core.types import Author, Place, ReplyDone, ReplyEvent, Turn, Usage
from tests.conftest import make_app, without_limits

REPLY = ("Sure", ", here", " is a", " short", " reply.")


class ZeroLLM:
    """An LLM that answers at once, so the figures are the core's own cost."""

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        for piece in REPLY:
            yield LLMDelta(piece)
        yield LLMEnd("stop", Usage(50, 5))

    async def aclose(self) -> None:
        return None


class Collect:
    """A Delivery that reads the whole reply stream (as a platform Delivery does) and says when it ended."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.count = 0

    async def deliver(self, job: Job, events: AsyncIterator[ReplyEvent]) -> None:
        async for event in events:
            if isinstance(event, ReplyDone):
                self.count += 1
                self.done.set()

    async def aclose(self) -> None:
        return None


class ServerCounter:
    """Reads, commands and per-command calls as the Redis server counts them."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._r = client

    async def snapshot(self) -> tuple[int, dict[str, int]]:
        stats: dict[str, Any] = await self._r.info("stats")
        commands: dict[str, Any] = await self._r.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in commands.items()}
        return int(stats["total_reads_processed"]), calls

    async def measure(self, work: Callable[[], Awaitable[float]], turns: int) -> dict[str, Any]:
        """Run ``work`` (which returns how long it took, in seconds) and count what it cost per turn.
        Idle reads over an equally long stretch are subtracted (and so are the two snapshots' own)."""
        reads0, calls0 = await self.snapshot()
        seconds = await work()
        reads1, calls1 = await self.snapshot()
        await asyncio.sleep(seconds)
        reads2, calls2 = await self.snapshot()
        own = 2  # INFO stats + INFO commandstats of one snapshot
        idle = reads2 - reads1 - own
        busy = reads1 - reads0 - own - idle
        commands = {
            name: (n - calls0.get(name, 0) - (calls2.get(name, 0) - n)) / turns
            for name, n in calls1.items()
            if name != "info"
        }
        commands = {name: round(per, 2) for name, per in sorted(commands.items()) if per >= 0.005}
        return {"round_trips": busy / turns, "commands": sum(commands.values()), "by_command": commands}


async def direct_path(rt: Runtime, counter: ServerCounter, turns: int) -> dict[str, Any]:
    """``Engine.collect``: the engine alone, as the terminal chat and scripts use it."""

    async def work() -> float:
        t0 = time.perf_counter()
        await timed_turns(rt, "direct", turns)
        return time.perf_counter() - t0

    return await counter.measure(work, turns)


async def queued_path(rt: Runtime, counter: ServerCounter, turns: int) -> dict[str, Any]:
    """The default path of a platform turn: dispatch -> queue -> worker -> engine -> Delivery, one turn at
    a time (each in a new conversation, as most platform turns are a new thread's first or next message)."""
    sink = Collect()
    rt.ops.deliveries.register("bench", sink)
    worker = rt.ops.worker(rt.engine)
    running = asyncio.create_task(worker.run())
    try:

        async def one(i: int) -> None:
            sink.done.clear()
            await rt.dispatcher.dispatch(turn(f"queued-{i}"), Route("bench"))
            await sink.done.wait()

        for i in range(20):  # warm up: scripts loaded, the consumer group made, the worker reading
            await one(-i - 1)
        # Cluster: the warm-up's deferred riders go now (and their connections open), not in the measured
        # stretch; the measured turns' own riders are flushed within it, once a second (a no-op on one node).
        await rt.engine.memory.flush()

        async def work() -> float:
            t0 = time.perf_counter()
            for i in range(turns):
                await one(i)
            return time.perf_counter() - t0

        return await counter.measure(work, turns)
    finally:
        await worker.shutdown(1.0)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


def turn(conv: str, text: str = "hello, how are you today?") -> Turn:
    # A user and a channel of its own per conversation: the shipped per-user and per-channel limits admit it.
    place = Place("bench", "w", "c-" + conv, conv)
    return Turn(author=Author("u-" + conv, "Bench"), place=place, text=text)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed_turns(rt: Runtime, conv: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await rt.engine.collect(turn(conv))
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def throughput(rt: Runtime, conversations: int, turns_each: int) -> float:
    async def one(i: int) -> None:
        for _ in range(turns_each):
            await rt.engine.collect(turn(f"tp{conversations}-{i}"))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(conversations)))
    return conversations * turns_each / (time.perf_counter() - t0)


async def run(turns: int) -> dict[str, Any]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        server = RedisServer(Path(tmp), tcp=True, appendonly=False).start()
        pool = aioredis.BlockingConnectionPool.from_url(server.url, decode_responses=True, max_connections=64)
        client = aioredis.Redis(connection_pool=pool)
        # One user sending thousands of turns a second is exactly what the shipped rate limits refuse: measure
        # the answering path with them off (make bench-safety measures the limits themselves).
        limits = load_bot("arcade").config.limits
        spec = without_limits(load_bot("arcade"))
        memory = spec.config.memory.model_copy(update={"max_messages": 20_000, "fold_after": 10**9})
        spec = replace(spec, config=spec.config.model_copy(update={"memory": memory}))
        settings = Settings(_env_file=None, openai_model="bench", parley_data_dir=Path(tmp))  # type: ignore[call-arg]
        results: dict[str, Any] = {}
        try:
            async with open_runtime(spec, make_app(settings), llm=ZeroLLM(), redis=client) as rt:
                await timed_turns(rt, "warm", 50)
                counter = ServerCounter(client)
                results["direct"] = await direct_path(rt, counter, min(turns, 500))
                results["queued"] = await queued_path(rt, counter, min(turns, 300))
            # The same queued path with the shipped limits on: rate windows, quotas and the fair line for
            # generation slots ride on the engine's read and write.
            shipped = replace(load_bot("arcade"), config=spec.config.model_copy(update={"limits": limits}))
            async with open_runtime(shipped, make_app(settings), llm=ZeroLLM(), redis=client) as rt:
                results["queued_limits"] = await queued_path(rt, ServerCounter(client), min(turns, 300))
            async with open_runtime(spec, make_app(settings), llm=ZeroLLM(), redis=client) as rt:
                results["round_trips_per_turn"] = results["direct"]["round_trips"]
                latencies = await timed_turns(rt, "seq", turns)
                results["overhead_ms"] = {
                    "p50": pct(latencies, 0.5),
                    "p99": pct(latencies, 0.99),
                    "mean": statistics.fmean(latencies),
                }
                results["turns_per_second"] = {}
                for conversations, each in ((1, turns), (100, max(2, turns // 100)), (1000, 2)):
                    results["turns_per_second"][str(conversations)] = await throughput(
                        rt, conversations, each
                    )
                flat = {}
                for stored in (10, 10_000):
                    conv = f"stored-{stored}"
                    pad = [
                        NewMessage("user" if i % 2 == 0 else "assistant", f"earlier message {i}", 4)
                        for i in range(stored)
                    ]
                    for start in range(0, stored, 1000):
                        await rt.engine.memory.record(turn(conv).place, pad[start : start + 1000])
                    await timed_turns(rt, conv, 20)
                    flat[str(stored)] = pct(await timed_turns(rt, conv, max(200, turns // 4)), 0.5)
                results["p50_ms_by_stored_messages"] = flat
                results["flatness_ratio"] = flat["10000"] / flat["10"]
        finally:
            await client.aclose()
            await pool.aclose()
            server.stop()
    return results


def report(results: dict[str, Any]) -> str:
    o = results["overhead_ms"]
    tps = results["turns_per_second"]
    flat = results["p50_ms_by_stored_messages"]
    rows = [
        ("core overhead per turn, p50", f"{o['p50']:.3f} ms", "< 1 ms"),
        ("core overhead per turn, p99", f"{o['p99']:.3f} ms", ""),
        (
            "Redis round trips per turn, direct (server-counted)",
            f"{results['direct']['round_trips']:.2f}",
            "2",
        ),
        ("Redis commands per turn, direct", f"{results['direct']['commands']:.2f}", ""),
        (
            "Redis round trips per turn, queued (server-counted)",
            f"{results['queued']['round_trips']:.2f}",
            "<= 6",
        ),
        ("Redis commands per turn, queued", f"{results['queued']['commands']:.2f}", ""),
        (
            "Redis round trips per turn, queued, shipped limits",
            f"{results['queued_limits']['round_trips']:.2f}",
            "<= 6",
        ),
        ("turns/s, 1 conversation", f"{tps['1']:.0f}", ""),
        ("turns/s, 100 concurrent conversations", f"{tps['100']:.0f}", ""),
        ("turns/s, 1,000 concurrent conversations", f"{tps['1000']:.0f}", ""),
        ("p50 per turn, 10 messages stored", f"{flat['10']:.3f} ms", ""),
        ("p50 per turn, 10,000 messages stored", f"{flat['10000']:.3f} ms", ""),
        ("10,000 / 10 stored, ratio", f"{results['flatness_ratio']:.2f}", "<= 1.20"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'measure':<{width}}  {'value':>12}  target", "-" * (width + 24)]
    lines += [f"{name:<{width}}  {value:>12}  {target}" for name, value, target in rows]
    for path in ("direct", "queued", "queued_limits"):
        calls = ", ".join(f"{name} {n:g}" for name, n in results[path]["by_command"].items())
        lines.append(f"commands per {path} turn: {calls}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--json", default="bench-results.json")
    args = parser.parse_args()
    results = asyncio.run(run(args.turns))
    print(report(results))
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\n(written to {args.json})")


if __name__ == "__main__":
    main()
