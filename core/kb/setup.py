"""Compose a bot's knowledge base from its spec: config, Redis store, embedder, screen, naming.

A bot has a knowledge base when its ``bot.toml`` has a ``[kb]`` table or a ``knowledge`` file; the file
alone (no index published yet) is served as a one-document base.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from core.bot import BotSpec
from core.kb.embed import make_embedder
from core.kb.retrieve import KnowledgeBase, knowledge_file_index

__all__ = ["kb_config", "knowledge_file_index", "naming", "open_knowledge_base", "screen"]
from core.kb.screen import Screen
from core.kb.settings import EmbeddingSettings, KbConfig, parse_kb_config
from core.kb.sources import Naming
from core.kb.store import KbStore
from core.keys import KeySpace
from core.safety.redact import build_redactor
from core.settings import Settings


def kb_config(spec: BotSpec) -> KbConfig | None:
    if spec.config.kb is None and not spec.knowledge:
        return None
    return parse_kb_config(spec.config.kb or {}, str(spec.folder / "bot.toml"))


def naming(spec: BotSpec, cfg: KbConfig, collection: str = "") -> Naming:
    prefixes = tuple(sorted(cfg.collections.items(), key=lambda kv: -len(kv[0])))
    return Naming(spec.folder, cfg.base_url, collection, prefixes)


def screen(spec: BotSpec, cfg: KbConfig) -> Screen:
    redactor = None
    if cfg.redact and spec.config.privacy.redact:
        privacy = spec.config.privacy
        redactor = build_redactor(
            privacy.redact, privacy.extra_detectors, source=str(spec.folder / "bot.toml")
        )
    return Screen(redactor, cfg.allow_flagged)


@asynccontextmanager
async def open_knowledge_base(
    spec: BotSpec,
    settings: Settings,
    redis: aioredis.Redis,
    keys: KeySpace,
    emb: EmbeddingSettings,
) -> AsyncIterator[KnowledgeBase | None]:
    cfg = kb_config(spec)
    if cfg is None:
        yield None
        return
    fallback = None
    if spec.knowledge:
        source = spec.config.knowledge or "knowledge.md"
        fallback = await asyncio.to_thread(knowledge_file_index, spec.knowledge, source, cfg.base_url, cfg)
    kb = KnowledgeBase(cfg, KbStore(redis, keys), make_embedder(settings, emb), fallback)
    async with kb:
        yield kb
