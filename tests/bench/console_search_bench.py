"""The console's transcript search at 10,000 conversations: index writes per turn and query latency.

Builds 10,000 conversations of 8 messages each (a Zipf-like vocabulary, customer names, order numbers) in
a private redis-server, indexed exactly as turns index them (:meth:`SearchIndex.queue` on the write's
pipeline), then times 300 searches of five kinds through :meth:`SearchIndex.search` (intersection on the
server, then the matching lines of the newest 20 conversations). Prints p50 / p95 / max per kind and
overall; the target is p95 <= 200 ms. Run: ``make bench-search``. On a shared machine, run it once or
twice and say so beside the figures.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from core.console.search import SearchIndex
from core.keys import KeySpace
from core.memory import NewMessage
from core.redis_server import RedisServer
from core.types import Place

CONVERSATIONS = 10_000
MESSAGES = 8
QUERIES_PER_KIND = 60
NAMES = [
    f"{first} {last}"
    for first in ("Ana", "Ben", "Chloe", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun")
    for last in (
        "Ortiz",
        "Smith",
        "Kowalski",
        "Nguyen",
        "Okafor",
        "Rossi",
        "Larsen",
        "Tanaka",
        "Dubois",
        "Khan",
    )
]


def _vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(5_000)]


def _sentence(rng: random.Random, vocab: list[str]) -> str:
    # Zipf-like: a few words very common, most rare.
    words = [vocab[min(len(vocab) - 1, int(rng.paretovariate(1.1)) - 1)] for _ in range(rng.randint(6, 18))]
    return " ".join(words)


async def _build(
    client: aioredis.Redis, index: SearchIndex, keys: KeySpace, rng: random.Random, vocab: list[str]
) -> tuple[float, int]:
    started = time.perf_counter()
    commands = 0
    now = time.time()
    for start in range(0, CONVERSATIONS, 200):
        async with client.pipeline(transaction=False) as pipe:
            for c in range(start, start + 200):
                place = Place("slack", "T1", f"C{c % 50}", f"{1700000000 + c}.0001")
                name = NAMES[c % len(NAMES)]
                for m in range(MESSAGES):
                    user = m % 2 == 0
                    text = _sentence(rng, vocab)
                    if user and m == 0:
                        text += f" my order A{10_000 + c} is late"
                    message = NewMessage(
                        "user" if user else "assistant", text, 20, "U1", name if user else "Bot"
                    )
                    pipe.rpush(keys.messages(place), f"{m + 1}|{message.encode()}")
                    before = len(pipe)
                    index.queue(pipe, place, [text, name if user else ""], now=now - (CONVERSATIONS - c))
                    commands += len(pipe) - before
            await pipe.execute()
    return time.perf_counter() - started, commands


async def main() -> int:
    rng = random.Random(11)
    vocab = _vocabulary(rng)
    keys = KeySpace("bench")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False)
        await asyncio.to_thread(server.start)
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            index = SearchIndex(client, keys, ttl_seconds=30 * 86_400)
            seconds, commands = await _build(client, index, keys, rng, vocab)
            turns = CONVERSATIONS * MESSAGES // 2
            info = await client.info("memory")
            print(
                f"built {CONVERSATIONS:,} conversations x {MESSAGES} messages in {seconds:.1f} s; "
                f"index commands per message {commands / (CONVERSATIONS * MESSAGES):.1f} "
                f"(per turn of two messages {2 * commands / (CONVERSATIONS * MESSAGES):.1f}, all on the "
                f"write's own pipeline); {turns:,} turns; Redis used {info['used_memory_human']}"
            )
            kinds = {
                "common word": lambda: vocab[rng.randint(0, 3)],
                "rarer word": lambda: vocab[rng.randint(40, 400)],
                "order number": lambda: f"A{10_000 + rng.randrange(CONVERSATIONS)}",
                "name": lambda: rng.choice(NAMES),
                "two words": lambda: f"{vocab[rng.randint(0, 20)]} {vocab[rng.randint(20, 200)]}",
            }
            everything: list[float] = []
            print(f"{'query':<14}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'hits (median)':>15}")
            for kind, make in kinds.items():
                times = []
                hits = []
                for _ in range(QUERIES_PER_KIND):
                    query = make()
                    started = time.perf_counter()
                    found = await index.search(query)
                    times.append((time.perf_counter() - started) * 1000)
                    hits.append(found.total)
                everything += times
                q = statistics.quantiles(times, n=20)
                print(
                    f"{kind:<14}{statistics.median(times):>9.1f}{q[18]:>9.1f}{max(times):>9.1f}"
                    f"{statistics.median(hits):>15,.0f}"
                )
            q = statistics.quantiles(everything, n=20)
            print(f"{'all':<14}{statistics.median(everything):>9.1f}{q[18]:>9.1f}{max(everything):>9.1f}")
            print(f"target p95 <= 200 ms: {'met' if q[18] <= 200 else 'NOT met'}")
            return 0 if q[18] <= 200 else 1
        finally:
            await client.aclose()
            await asyncio.to_thread(server.stop)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
