"""``make bench-kb``: knowledge-base speed on synthetic help-centre pages (no embedding calls timed).

Prints: ingest time for 1,000 pages (lexical, parse + chunk + screen + index + publish to Redis), re-ingest
time with nothing changed, and retrieval p50/p95 at 10,000 chunks, lexical + vector (1,536-dimensional
vectors, the size of text-embedding-3-small), with numpy/BLAS held to one thread.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # "on one core": set before numpy loads

import asyncio  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from bots.loader import load_bot  # noqa: E402
from core.kb import setup as kb_setup  # noqa: E402
from core.kb.index import KbIndex  # noqa: E402
from core.kb.ingest import ingest  # noqa: E402
from core.kb.retrieve import KnowledgeBase  # noqa: E402
from core.kb.settings import KbConfig  # noqa: E402
from core.kb.store import KbStore  # noqa: E402
from core.keys import KeySpace  # noqa: E402
from core.redis_server import RedisServer  # noqa: E402


def _client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=True)


PAGES = 1_000
SECTIONS = 10  # per page: 10,000 chunks
DIMS = 1_536
QUERIES = 300


def _vocabulary(rng: random.Random) -> list[str]:
    syllables = ["ka", "lo", "mi", "ren", "sto", "pa", "vel", "tor", "qui", "zen", "bar", "el", "dun", "fi"]
    words = {"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(8_000)}
    return sorted(words)


def _write_pages(root: Path, rng: random.Random, vocab: list[str]) -> None:
    for p in range(PAGES):
        folder = root / f"area{p % 8}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"# Page {p} {rng.choice(vocab)}"]
        for s in range(SECTIONS):
            lines.append(f"\n## Section {s} {rng.choice(vocab)} {rng.choice(vocab)}\n")
            lines.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(40, 100))) + ".")
        (folder / f"page{p}.md").write_text("\n".join(lines), encoding="utf-8")


async def main() -> int:
    rng = random.Random(7)
    vocab = _vocabulary(rng)
    spec = load_bot("support")
    cfg = KbConfig(sources=["pages"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pages"
        _write_pages(root, rng, vocab)
        server = RedisServer(Path(tmp) / "redis", appendonly=False)
        await asyncio.to_thread(server.start)
        client = _client(server.url)
        try:
            store = KbStore(client, KeySpace("bench"))
            args = {
                "store": store,
                "cfg": cfg,
                "naming": kb_setup.naming(spec, cfg),
                "screen": kb_setup.screen(spec, cfg),
                "embedder": None,
            }
            started = time.perf_counter()
            report = await ingest([str(root)], **args)  # type: ignore[arg-type]
            first = time.perf_counter() - started
            started = time.perf_counter()
            again = await ingest([str(root)], **args)  # type: ignore[arg-type]
            unchanged = time.perf_counter() - started
            index = await store.load()
        finally:
            await client.aclose()
            server.stop()
    assert index is not None
    chunks = index.size
    # Vectors as a real endpoint would give them (random here: the speed does not depend on the values).
    gen = np.random.default_rng(7)
    vectors = gen.standard_normal((chunks, DIMS), dtype=np.float32)
    hybrid = KbIndex.build(index.chunks, index.documents, vectors, "bench")
    kb = KnowledgeBase(cfg, None)
    queries = [" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 8))) for _ in range(QUERIES)]
    qvecs = gen.standard_normal((QUERIES, DIMS), dtype=np.float32)
    timings = {"lexical": [], "lexical + vector": []}
    for name, qv in (("lexical", None), ("lexical + vector", qvecs)):
        for i, q in enumerate(queries):
            t = time.perf_counter()
            kb._search(hybrid, q, None if qv is None else qv[i], ())
            timings[name].append((time.perf_counter() - t) * 1000)
    print(f"knowledge-base bench (synthetic pages, {SECTIONS} sections each; numpy on one thread)")
    print(
        f"ingest {report.pages} pages -> {report.chunks} chunks: {first:.2f} s (lexical, no embedding calls)"
    )
    print(f"re-ingest, nothing changed: {unchanged:.2f} s ({again.summary().split(';')[-1].strip()})")
    for name, ms in timings.items():
        ms.sort()
        p95 = ms[int(len(ms) * 0.95) - 1]
        print(
            f"retrieval at {chunks} chunks, {name}: p50 {statistics.median(ms):.2f} ms, p95 {p95:.2f} ms "
            f"({len(ms)} queries{f', {DIMS}-dim vectors' if 'vector' in name else ''})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
