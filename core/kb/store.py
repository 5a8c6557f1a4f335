"""The shared index: a versioned artifact in Redis that every replica loads.

Keys (one hash tag, so a publish is one MULTI/EXEC even on Redis Cluster)::

    parley:<bot>:{kb-<bot>}:version        the current version number
    parley:<bot>:{kb-<bot>}:next           the version counter
    parley:<bot>:{kb-<bot>}:artifact:<n>   the index (npz, base64: the bot's client decodes responses)
    parley:<bot>:{kb-<bot>}:info           a hash: last ingest time, summary, sizes
    parley:<bot>:{kb-<bot>}:breaker        set (with a TTL) while the embeddings endpoint is failing

A publish writes the new artifact, moves ``version`` and lets the old artifact expire a few minutes later (a
replica that read the old version number can still load it). Replicas compare ``version`` now and then, so
the per-turn cost is nil.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.errors import StoreUnavailable
from core.kb.errors import IndexCorrupt
from core.kb.index import KbIndex
from core.keys import KeySpace

OLD_ARTIFACT_TTL = 600  # seconds an old version stays loadable after a new one is published


class KbStore:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = redis
        tag = f"{{kb-{keys.bot}}}"
        self._version = keys.scoped(tag, "version")
        self._next = keys.scoped(tag, "next")
        self._info = keys.scoped(tag, "info")
        self._artifact_prefix = keys.scoped(tag, "artifact")
        self._breaker = keys.scoped(tag, "breaker")

    def _artifact(self, version: int) -> str:
        return f"{self._artifact_prefix}:{version}"

    async def version(self) -> int:
        try:
            raw = await self._redis.get(self._version)
        except RedisError as exc:
            raise StoreUnavailable(f"knowledge base: cannot read the index version: {exc}") from None
        return int(raw) if raw else 0

    async def load(self, version: int | None = None) -> KbIndex | None:
        """The current (or given) index, or None when none was published."""
        try:
            if version is None:
                version = await self.version()
            if not version:
                return None
            blob = await self._redis.get(self._artifact(version))
        except RedisError as exc:
            raise StoreUnavailable(f"knowledge base: cannot load the index: {exc}") from None
        if blob is None:
            raise IndexCorrupt(f"index version {version} is missing its artifact")
        return await asyncio.to_thread(_decode, blob, version)  # megabytes: off the event loop

    async def publish(self, index: KbIndex, summary: str) -> int:
        data = await asyncio.to_thread(index.to_bytes)
        blob = base64.b64encode(data).decode("ascii")
        try:
            old = await self.version()
            version = int(await self._redis.incr(self._next))
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._artifact(version), blob)
                pipe.set(self._version, version)
                if old:
                    pipe.expire(self._artifact(old), OLD_ARTIFACT_TTL)
                pipe.hset(
                    self._info,
                    mapping={
                        "version": version,
                        "ingested_at": f"{time.time():.0f}",
                        "summary": summary,
                        "bytes": len(data),
                        "chunks": index.size,
                        "documents": len(index.documents),
                        "embed_model": index.embed_model,
                        "min_similarity": index.calibration.get("min_similarity", ""),
                    },
                )
                await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"knowledge base: cannot publish the index: {exc}") from None
        index.version = version
        return version

    async def note_summary(self, summary: str) -> None:
        try:
            await self._redis.hset(self._info, "summary", summary)
        except RedisError as exc:
            raise StoreUnavailable(f"knowledge base: cannot record the ingest summary: {exc}") from None

    async def info(self) -> dict[str, str]:
        try:
            raw = await self._redis.hgetall(self._info)
        except RedisError as exc:
            raise StoreUnavailable(f"knowledge base: cannot read its status: {exc}") from None
        return {str(k): str(v) for k, v in raw.items()}

    async def clear(self) -> None:
        """Drop every version (``parley kb ingest --rebuild`` starts over)."""
        try:
            version = await self.version()
            keys = [self._version, self._info] + ([self._artifact(version)] if version else [])
            await self._redis.delete(*keys)
        except RedisError as exc:
            raise StoreUnavailable(f"knowledge base: cannot clear the index: {exc}") from None

    async def trip_breaker(self, seconds: float) -> None:
        """Tell every replica to retrieve lexically for ``seconds`` (the embeddings endpoint is failing)."""
        try:
            await self._redis.set(self._breaker, "1", px=max(1, int(seconds * 1000)))
        except RedisError as exc:
            raise StoreUnavailable(f"knowledge base: cannot record the embeddings breaker: {exc}") from None

    async def breaker_remaining(self) -> float:
        """Seconds the shared breaker stays open (0 when closed)."""
        try:
            ms = await self._redis.pttl(self._breaker)
        except RedisError as exc:
            raise StoreUnavailable(f"knowledge base: cannot read the embeddings breaker: {exc}") from None
        return max(0, int(ms)) / 1000


def _decode(blob: bytes | str, version: int) -> KbIndex:
    try:
        data = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise IndexCorrupt(f"index version {version}: artifact is not base64") from None
    return KbIndex.from_bytes(data, version)
