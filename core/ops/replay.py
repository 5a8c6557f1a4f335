"""Queue items run once, and only while fresh: the worker-side check that follows the signature check.

A signed item proves who wrote it, not that it is new: one captured from Redis and pushed back into an
inbox (after it ran, beside a pending tool call rewritten under the same id) would run again as its author,
admin rights included. :meth:`JobGuard.admit` refuses

- ``job_expired``: issued (``Job.enqueued_at``, under the signature) more than ``max_age`` seconds ago;
- ``job_replayed``: its nonce was seen before. The first sight claims the nonce in Redis
  (``SET NX EX max_age``, value ``run:<random>``); :meth:`done` marks it ``done``. A worker that takes over
  a turn whose first worker died (``Job.attempt`` > 1) may run a nonce still marked ``run``, never one
  marked ``done``.

Both checks apply with signing keys only (production): without them items are not authenticated at all,
and a nonce would prove nothing. A refusal is logged and recorded in the safety events under its name.
An item queued by a version without nonces (during a rolling upgrade) is run if fresh.
"""

from __future__ import annotations

import secrets
import time

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from core.errors import StoreError
from core.keys import KeySpace
from core.ops.jobs import Job

log = structlog.get_logger("parley.queue")

EXPIRED, REPLAYED = "job_expired", "job_replayed"
RUNNING, DONE = "run", "done"


class JobGuard:
    def __init__(
        self, client: aioredis.Redis, keys: KeySpace, *, max_age_seconds: float, enabled: bool
    ) -> None:
        self._r = client
        self._keys = keys
        self.max_age = max_age_seconds
        self.enabled = enabled

    def key(self, nonce: str) -> str:
        return self._keys.scoped("queue", "nonce", nonce)

    async def admit(self, job: Job, *, now: float | None = None) -> str:
        """'' to run ``job``, else the refusal's name."""
        if not self.enabled:
            return ""
        now = time.time() if now is None else now
        if now - job.enqueued_at > self.max_age:
            return EXPIRED
        if not job.nonce:  # queued by a version before nonces (a rolling upgrade): fresh is all we can ask
            log.warning("job_without_nonce", turn_id=job.turn.turn_id)
            return ""
        key = self.key(job.nonce)
        ttl = max(1, int(self.max_age) + 1)
        # This sight's own mark: a SET the client sends again after its reply was lost (a connection dropped
        # under it in a Cluster failover) finds it, and is not taken for a replay (the turn would be lost).
        mine = f"{RUNNING}:{secrets.token_hex(6)}"
        try:
            if await self._r.set(key, mine, nx=True, ex=ttl):
                return ""
            seen = await self._r.get(key)
        except RedisError as exc:
            raise StoreError(f"cannot check a queue item's nonce: {type(exc).__name__}") from exc
        seen = seen.decode() if isinstance(seen, bytes) else seen
        if seen == mine:
            return ""
        running = seen == RUNNING or str(seen).startswith(RUNNING + ":")  # (bare "run": an older version)
        if job.attempt > 1 and running:  # taking over from a worker that died mid-turn
            return ""
        return REPLAYED

    async def done(self, job: Job) -> None:
        """The item ran: from now on even a takeover may not run it again."""
        if not self.enabled or not job.nonce:
            return
        try:
            await self._r.set(self.key(job.nonce), DONE, xx=True, keepttl=True)
        except RedisError as exc:  # the nonce still stands as "run": only a takeover could run it again
            log.warning("job_nonce_not_marked", error=type(exc).__name__)
