"""``make bench-kb``: knowledge-base speed, with the embedded model (all-MiniLM-L6-v2 in process).

Prints: lexical ingest of 1,000 synthetic pages (parse + chunk + screen + index + publish to Redis) and the
re-ingest with nothing changed; ingest of the sample help centre with the embedded model (chunks/s, each
chunk's text, heading and sentences embedded); query embedding p50/p95 (the question sets' questions), then
per runtime (onnxruntime, the default when installed, and numpy, the fallback) the forward pass alone:
p50/p95 and CPU ms per question; retrieval p50/p95 at 10,000 chunks, search alone and query embedding +
search (``KnowledgeBase.retrieve``). BLAS and onnxruntime on one thread each, as the bot has them
(core/kb/blas.py, core/kb/minilm_ort.py). The 10,000 chunks' vectors (text, heading, and 4-10 sentences
each) are mixtures of the help centre's real MiniLM vectors (embedding 10,000 chunks here would take the
bench an hour; the search cost does not depend on the values).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from bots.loader import load_bot
from core.kb import minilm_ort
from core.kb import setup as kb_setup
from core.kb.index import KbIndex
from core.kb.ingest import ingest
from core.kb.minilm import LocalEmbedder, MiniLM, shared_model
from core.kb.retrieve import KnowledgeBase
from core.kb.settings import KbConfig
from core.kb.store import KbStore
from core.keys import KeySpace
from core.redis_server import RedisServer
from tests.bench.kb_eval import load_sets


def _client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=True)


PAGES = 1_000
SECTIONS = 10  # per page: 10,000 chunks
DIMS = 384  # all-MiniLM-L6-v2
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
    chunks = min(index.size, 10_000)  # the synthetic pages make a few more; retrieval is timed at 10,000
    model = LocalEmbedder()
    await model.warm()
    # The sample help centre, embedded in process.
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False)
        await asyncio.to_thread(server.start)
        client = _client(server.url)
        try:
            scfg = kb_setup.kb_config(spec)
            assert scfg is not None
            store = KbStore(client, KeySpace("bench-model"))
            started = time.perf_counter()
            real = await ingest(
                scfg.sources,
                store=store,
                cfg=scfg,
                naming=kb_setup.naming(spec, scfg),
                screen=kb_setup.screen(spec, scfg),
                embedder=model,
            )
            model_ingest = time.perf_counter() - started
            help_centre = await store.load()
        finally:
            await client.aclose()
            server.stop()
    assert help_centre is not None and help_centre.vectors is not None
    assert help_centre.vectors.heads is not None and help_centre.vectors.sentences is not None
    questions = [q["text"] for qs in load_sets() for q in (*qs.answerable, *qs.outside)]
    # From here on, as a bot process serves questions (the knowledge base's start sets BLAS to one thread).
    kb = KnowledgeBase(cfg, None, model)
    await kb.__aenter__()
    embed_ms = []
    for q in questions:
        t = time.perf_counter()
        await model.embed([q])
        embed_ms.append((time.perf_counter() - t) * 1000)
    runtimes = _by_runtime(questions)
    # 10,000 chunks' vectors: random mixtures of three real chunk vectors plus noise, normalised.
    gen = np.random.default_rng(7)
    base, heads = help_centre.vectors.matrix, help_centre.vectors.heads

    def mixed(source: np.ndarray, n: int = chunks) -> np.ndarray:
        picks = gen.integers(0, len(source), (n, 3))
        weights = gen.dirichlet(np.ones(3), n).astype(np.float32)
        out = np.einsum("nk,nkd->nd", weights, source[picks]) + gen.normal(0, 0.02, (n, DIMS))
        return out.astype(np.float32)

    def mixed_sentences() -> list[np.ndarray]:
        counts = gen.integers(4, 11, chunks)  # the sample help centre's chunks have 1-10
        flat = mixed(help_centre.vectors.sentences, int(counts.sum()))  # type: ignore[union-attr]
        return np.split(flat, np.cumsum(counts)[:-1])

    hybrid = KbIndex.build(
        index.chunks[:chunks],
        index.documents,
        mixed(base),
        model.model,
        heads=mixed(heads),
        sentences=mixed_sentences(),
    )
    assert hybrid.vectors is not None and hybrid.vectors.sentences is not None
    sentence_rows = hybrid.vectors.sentences.shape[0]
    kb.index = hybrid
    qvecs = np.asarray(await model.embed(questions), dtype=np.float32)
    timings: dict[str, list[float]] = {"lexical": [], "lexical + vector": [], "embed + lexical + vector": []}
    for n in range(QUERIES):
        q, qv = questions[n % len(questions)], qvecs[n % len(questions)]
        t = time.perf_counter()
        kb._search(hybrid, q, None, ())
        timings["lexical"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        kb._search(hybrid, q, qv, ())
        timings["lexical + vector"].append((time.perf_counter() - t) * 1000)
    lexical_turns = 0  # past the retrieve deadline (1 s): the turn went lexical, as the bot's would
    for n in range(100):
        t = time.perf_counter()
        result = await kb.retrieve(questions[n % len(questions)])
        timings["embed + lexical + vector"].append((time.perf_counter() - t) * 1000)
        lexical_turns += result.mode != "hybrid"
        kb._breaker_until = 0.0  # measure every question with its embedding, not the breaker's lexical turns
    await kb.aclose()
    load = f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    print(f"knowledge-base bench (the machine is shared: {load})")
    print(f"ingest {report.pages} synthetic pages -> {report.chunks} chunks: {first:.2f} s (lexical only)")
    print(f"re-ingest, nothing changed: {unchanged:.2f} s ({again.summary().split(';')[-1].strip()})")
    print(
        f"ingest with the embedded model, sample help centre: {real.chunks} chunks in {model_ingest:.1f} s = "
        f"{real.chunks / model_ingest:.2f} chunks/s (text + heading + sentence vectors, {model.model})"
    )
    print(f"query embedding: {_pct(embed_ms)} ({len(embed_ms)} questions, {model.model}, {model.where})")
    for runtime, (ms, cpu) in runtimes.items():
        print(f"  forward pass on {runtime}: {_pct(ms)}, CPU {cpu:.2f} ms per question (one thread)")
    for name, ms in timings.items():
        where = f"{chunks} chunks ({sentence_rows} sentence vectors)"
        print(f"retrieval at {where}, {name}: {_pct(ms)} ({len(ms)} queries)")
    print(f"questions past the retrieve deadline (answered lexical): {lexical_turns} of 100")
    return 0


def _by_runtime(questions: list[str]) -> dict[str, tuple[list[float], float]]:
    """Each runtime's forward pass on the questions one at a time (no cache, no thread hop): wall ms per
    question and mean CPU ms per question, after a warm-up pass."""
    models = {"numpy": MiniLM.load(runtime="numpy")}
    if minilm_ort.available():
        models["onnxruntime"] = shared_model() if shared_model().runtime == "onnxruntime" else MiniLM.load()
    out = {}
    for runtime, m in sorted(models.items()):
        for q in questions:
            m.encode([q])
        ms = []
        cpu = time.process_time()
        for q in questions:
            t = time.perf_counter()
            m.encode([q])
            ms.append((time.perf_counter() - t) * 1000)
        out[runtime] = (ms, (time.process_time() - cpu) * 1000 / len(questions))
    return out


def _pct(ms: list[float]) -> str:
    ms = sorted(ms)
    return f"p50 {statistics.median(ms):.2f} ms, p95 {ms[max(0, int(len(ms) * 0.95) - 1)]:.2f} ms"


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
