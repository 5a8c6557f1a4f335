"""Storage bench: what one user adds to Redis after N turns of each kind, with the stored-bytes budgets
on (as shipped) and off. Figures, not assertions.

    python -m tests.safety.bench_storage [--turns 300]

A zero-latency in-process LLM and a real redis-server; rate limits and token quotas are off so the budgets
are the only brake (as for a user who stays under the rate limits all day). Bytes are Redis's own
``MEMORY USAGE`` summed over every key after the turns (one user, one kind at a time, a fresh keyspace).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog

from core.redis_server import RedisServer
from core.runtime import open_runtime
from core.settings import Settings
from core.types import Author, CommandCall, ImageRef, Place, Turn
from tests.appsettings import make_app
from tests.bench.core_bench import ZeroLLM
from tests.safety.conftest import NO_LIMITS, edit_spec

JUNK = "x" * 3_900


def kinds(i: int) -> dict[str, Turn]:
    """One turn of each kind, the i-th (a new thread every turn: the per-conversation cap cannot help)."""
    who = Author("u1", "Ada")
    place = Place("discord", "g1", "c1", f"t{i}")
    image = ImageRef(
        "https://cdn.discordapp.com/a/1/x.png", "image/png", 10, "x" * 200 + ".png", "y" * 500, str(i)
    )
    return {
        "chat, 3.9 KB message": Turn(who, place, JUNK),
        "/tool <3.9 KB junk>": Turn(who, place, f"/tool {JUNK}", command=CommandCall("tool", JUNK)),
        "image with a long name and alt text": dataclasses.replace(Turn(who, place, "look"), images=(image,)),
        "/story <idea> (a story and its votes)": Turn(
            who, place, "/story a cat", command=CommandCall("story", "a lighthouse " * 40)
        ),
    }


async def bytes_after(url: str, tmp: Path, limits: dict[str, Any], kind: str, turns: int) -> tuple[int, int]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    await client.flushall()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        openai_api_key="k",
        openai_base_url="http://127.0.0.1:9/v1",
        parley_data_dir=tmp,
        parley_queue=False,
    )
    spec = edit_spec(
        "arcade", limits={**NO_LIMITS, "max_input_chars": 4_000, **limits}, moderation={"profile": "local"}
    )
    refused = 0
    try:
        async with open_runtime(
            spec,
            make_app(settings),
            llm=ZeroLLM(),
            redis=client,
        ) as rt:
            for i in range(turns):
                result = await rt.engine.collect(kinds(i)[kind])
                refused += result.meta.get("reason") == "quota_exceeded"
        total = 0
        async for key in client.scan_iter(count=1000):
            total += int(await client.memory_usage(key) or 0)
    finally:
        await client.aclose()
    return total, refused


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=300)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    off = {"user_daily_stored_bytes": 0, "conversation_daily_stored_bytes": 0}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", tcp=True, appendonly=False).start()
        try:
            print(f"Redis bytes one user adds in {args.turns} turns (a new thread each), rate limits off")
            print(f"{'kind':42} {'budgets off':>14} {'budgets on':>14}  refused (on)")
            for kind in kinds(0):
                without, _ = await bytes_after(server.url, Path(tmp), off, kind, args.turns)
                with_, refused = await bytes_after(server.url, Path(tmp), {}, kind, args.turns)
                print(f"{kind:42} {without:>14,} {with_:>14,}  {refused}")
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
