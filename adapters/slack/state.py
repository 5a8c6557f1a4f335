"""The little Slack-side state the adapter keeps, in Redis so every replica shares it.

- thread marks: "the bot answered in this thread", so a follow-up without a mention is answered there;
- feedback: 👍/👎 per answer (turn id) and per user, with running totals (and on the console's daily
  aggregates, in the same round trip).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from adapters.slack.translate import Feedback
from core.errors import StoreError
from core.keys import USER_DATA_TTL, KeySpace, user_data_entry
from core.types import Place

FEEDBACK_TTL = 90 * 86_400


VoteCounter = Callable[[Any, Place, str, "str | None", str], None]
"""(pipeline, place, vote, previous, turn id): queue a 👍/👎 on the console's aggregates
(``EdgeDeps.count_vote``)."""


class SlackState:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: KeySpace,
        *,
        thread_ttl: int,
        count_vote: VoteCounter | None = None,
    ) -> None:
        self._r = redis
        self._count_vote = count_vote
        self._keys = keys
        self._thread_ttl = max(thread_ttl, 60)

    def _thread_key(self, place: Place) -> str:
        return self._keys.scoped("slack", "thread", place.conversation_id)

    async def mark_thread(self, place: Place) -> None:
        if not place.thread:
            return
        try:
            await self._r.set(self._thread_key(place), "1", ex=self._thread_ttl)
        except RedisError as exc:
            raise StoreError(f"slack thread mark: {type(exc).__name__}") from exc

    async def in_thread(self, place: Place) -> bool:
        if not place.thread:
            return False
        try:
            return bool(await self._r.exists(self._thread_key(place)))
        except RedisError as exc:
            raise StoreError(f"slack thread mark: {type(exc).__name__}") from exc

    def feedback_key(self, turn_id: str) -> str:
        return self._keys.scoped("feedback", turn_id)

    def feedback_totals_key(self) -> str:
        return self._keys.scoped("feedback", "totals")

    async def record_feedback(self, fb: Feedback) -> bool:
        """Store one vote; returns False when the user had already cast the same vote on this answer."""
        key = self.feedback_key(fb.turn_id)
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hget(key, fb.user_id)
                pipe.hset(key, mapping={fb.user_id: fb.vote, "_conversation": fb.place.conversation_id})
                pipe.expire(key, FEEDBACK_TTL)
                previous, _, _ = await pipe.execute()
            index = self._keys.user_data(fb.place.platform, fb.user_id)  # so that /forget finds the vote
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.sadd(index, user_data_entry(key, fb.user_id))
                pipe.expire(index, USER_DATA_TTL)
                await pipe.execute()
            if previous == fb.vote:
                return False
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.hincrby(self.feedback_totals_key(), fb.vote, 1)
                if previous:
                    pipe.hincrby(self.feedback_totals_key(), previous, -1)
                if self._count_vote is not None:
                    self._count_vote(pipe, fb.place, fb.vote, previous, fb.turn_id)
                await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"slack feedback: {type(exc).__name__}") from exc
        return True
