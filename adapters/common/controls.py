"""Which posted messages still carry controls (a story's vote buttons), so a later reply can retire them.

A delivery that posts controls remembers where (``remember``); the delivery of a reply that says they no
longer apply (``ReplyResult.retire``) takes them (``take``) and strips them off. Kept in Redis beside the
conversation, so any worker can retire what another posted.

    {conv}:controls:<name>   list: the platform's message references (expires with the conversation)
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.errors import StoreError
from core.keys import KeySpace
from core.types import Place


class Controls:
    def __init__(self, client: aioredis.Redis, keys: KeySpace, *, ttl_seconds: int) -> None:
        self._r = client
        self._keys = keys
        self._ttl = max(60, ttl_seconds)

    def key(self, place: Place, name: str) -> str:
        return self._keys.conversation(place) + f":controls:{name}"

    async def remember(self, place: Place, name: str, ref: str) -> None:
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.rpush(self.key(place, name), ref)
                pipe.expire(self.key(place, name), self._ttl)
                await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"controls: {type(exc).__name__}: {exc}") from exc

    async def take(self, place: Place, name: str) -> list[str]:
        """Every reference remembered under ``name``, removed at once (one worker retires each)."""
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.lrange(self.key(place, name), 0, -1)
                pipe.delete(self.key(place, name))
                raw: Any = await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"controls: {type(exc).__name__}: {exc}") from exc
        return [str(r) for r in raw[0]]
