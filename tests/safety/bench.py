"""Safety benchmark: what the safety layer costs per turn. Figures, not assertions.

    python -m tests.safety.bench [--turns 1000]

A zero-latency in-process LLM and a real redis-server; the moderation endpoint is the loopback fake (so its
figure is plumbing, not OpenAI's latency). Prints a table, then the pathological-input table: for each local
rule, the worst milliseconds per 10 KB over the inputs of tests/safety/pathological.py at 10 KB and 100 KB (a
linear rule shows about the same figure in both columns; a quadratic one ten times more at 100 KB).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog

from core.keys import KeySpace
from core.redis_server import RedisServer
from core.runtime import open_runtime
from core.safety.limits import LimitStore, Window
from core.safety.redact import KINDS, build_redactor
from core.safety.rules import LocalRules
from core.settings import Settings
from core.types import Author, Place, Turn
from tests.appsettings import make_app
from tests.bench.core_bench import ZeroLLM
from tests.core.helpers import CountingConnection
from tests.fakes.openai_server import FakeOpenAI
from tests.safety.conftest import edit_spec
from tests.safety.pathological import cases, rules

CHAT = "Hi! My order from last Tuesday hasn't arrived yet and the tracking page shows nothing. Can you check?"
BIG = (CHAT + " ") * 40  # ~4 KB
DIGITS = "Order 1234-5678 shipped 2024-01-15, invoice 99887766, 3-5 days, ref 4411 2233. " * 50

MINIMAL = {
    "moderation": {"profile": "local", "canary": False},
    "limits": {
        "user_rate": [],
        "channel_rate": [],
        "user_daily_tokens": 0,
        "workspace_daily_tokens": 0,
        "max_concurrent_per_workspace": 0,
    },
    "privacy": {"redact": []},
}
LIMITS_ON = {  # the shipped kinds of limit, with counts no benchmark turn reaches
    "user_rate": [{"count": 10**6, "seconds": 10}, {"count": 10**6, "seconds": 3600}],
    "channel_rate": [{"count": 10**6, "seconds": 60}],
    "user_daily_tokens": 10**12,
    "workspace_daily_tokens": 10**12,
    "max_concurrent_per_workspace": 10**6,
}


def micro(fn: Any, n: int = 2000) -> float:
    """Microseconds per call (median of 5 runs)."""
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(runs)


async def per_turn(
    url: str, fake: FakeOpenAI, tmp: Path, tables: dict[str, Any], turns: int
) -> tuple[float, float, float]:
    pool = aioredis.ConnectionPool.from_url(url, decode_responses=True, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        openai_base_url=fake.base_url,
        openai_api_key="k",
        parley_data_dir=tmp,
        parley_queue=False,
    )
    times = []
    try:
        async with open_runtime(
            edit_spec("arcade", **tables),
            make_app(settings),
            llm=ZeroLLM(),
            redis=client,
        ) as rt:
            place = Place("bench", "w", "c", "t")
            for _ in range(20):
                await rt.engine.collect(Turn(Author("u"), place, CHAT))
            before = CountingConnection.sends
            for _ in range(turns):
                started = time.perf_counter()
                await rt.engine.collect(Turn(Author("u"), place, CHAT))
                times.append(time.perf_counter() - started)
            sends = (CountingConnection.sends - before) / turns
    finally:
        await client.aclose()
        await pool.aclose()
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000, sends


async def admissions_per_second(url: str) -> float:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    store = LimitStore(client, KeySpace("bench"))
    await store.load()
    w = Window(10**9, 10)
    started = time.perf_counter()
    for batch in range(20):
        await asyncio.gather(
            *(store.run([store.rate("user", f"u{i}", w, f"{batch}-{i}")]) for i in range(100))
        )
    rate = 2000 / (time.perf_counter() - started)
    await client.aclose()
    return rate


def pathological_table() -> None:
    """Worst ms per 10 KB for each rule at 10 KB and 100 KB, with the input that was worst at 100 KB."""
    sizes = (10_000, 100_000)
    inputs = {size: list(cases(size)) for size in sizes}
    rows = []
    for name, check in rules().items():
        worst: list[tuple[float, str]] = []
        for size in sizes:
            per_10kb = []
            for label, text in inputs[size]:
                started = time.perf_counter()
                check(text)
                per_10kb.append(((time.perf_counter() - started) * 1000 / (size / 10_000), label))
            worst.append(max(per_10kb))
        rows.append((name, worst[0][0], worst[1][0], worst[1][1]))
    header = "pathological input, worst ms per 10 KB"
    width = max(len(header), *(len(r[0]) for r in rows))
    print(f"\n{header:<{width}}  {'10 KB':>8}  {'100 KB':>8}  worst input")
    for name, small, big, label in rows:
        print(f"{name:<{width}}  {small:8.2f}  {big:8.2f}  {label}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--pathological-only", action="store_true", help="print only the pathological table")
    args = parser.parse_args()
    if args.pathological_only:
        pathological_table()
        return
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    redactor = build_redactor(KINDS, [], source="bench")
    rules = LocalRules(blocked=[], redactor=redactor, link_domains=["example.com"], system_prompts=[BIG])
    rows = [
        ("redact, 100-char chat message", f"{micro(lambda: redactor.redact(CHAT)):.0f} µs"),
        ("redact, 4 KB prose", f"{micro(lambda: redactor.redact(BIG), 200):.0f} µs"),
        ("redact, 4 KB digit-heavy", f"{micro(lambda: redactor.redact(DIGITS), 200):.0f} µs"),
        ("local input rules, chat message", f"{micro(lambda: rules.check_input(CHAT)):.0f} µs"),
        ("local output rules, 4 KB reply", f"{micro(lambda: rules.check_output(BIG), 200):.0f} µs"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", tcp=True, appendonly=False).start()
        try:
            async with FakeOpenAI() as fake:
                configs = {
                    "minimal (local rules, no redaction, no limits)": MINIMAL,
                    "+ redaction, canary, limits (shipped kinds)": {
                        "moderation": {"profile": "local"},
                        "limits": LIMITS_ON,
                    },
                    "+ moderation endpoint (loopback fake), relaxed": {"limits": LIMITS_ON},
                }
                for name, tables in configs.items():
                    p50, p99, sends = await per_turn(server.url, fake, Path(tmp), tables, args.turns)
                    rows.append(
                        (
                            f"turn p50 / p99, {name}",
                            f"{p50:.2f} / {p99:.2f} ms, {sends:.0f} Redis round trips",
                        )
                    )
            rows.append(
                (
                    "rate-limit admissions, 100 concurrent",
                    f"{await admissions_per_second(server.url):,.0f} /s",
                )
            )
        finally:
            server.stop()
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    pathological_table()


if __name__ == "__main__":
    asyncio.run(main())
