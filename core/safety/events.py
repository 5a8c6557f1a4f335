"""The record of moderation decisions: a bounded Redis stream plus counters, and a structured log line.

Stream ``parley:<bot>:safety:events`` (``XADD ... MAXLEN ~ N``), one entry per decision: who (platform,
workspace, channel, user), turn id, stage (input / output), category, action, source (rules / endpoint /
engine) and a short detail code (a score, a rule name). Never the text. Counters in the hash
``parley:<bot>:safety:counters`` (``<stage>:<action>:<category>``, ``endpoint:<open|closed>:<code>``), and
the decisions' counters per workspace or guild in ``parley:<bot>:safety:counters:<platform>:<workspace>``:
``/safety`` shows a workspace's admins only their own.

Recording never fails a turn: a Redis error is logged and the decision still applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from core.keys import KeySpace
from core.types import Turn

log = structlog.get_logger("parley.safety")


@dataclass(frozen=True, slots=True)
class Decision:
    stage: str  # "input" | "output" | "admission"
    category: str
    action: str  # allow | refuse | redact | flag
    source: str  # rules | endpoint | engine
    detail: str = ""


class EventLog:
    def __init__(self, client: aioredis.Redis, keys: KeySpace, *, maxlen: int) -> None:
        self._r = client
        self.stream = keys.scoped("safety", "events")
        self.counters_key = keys.scoped("safety", "counters")
        self._maxlen = maxlen
        self._log = log.bind(bot=keys.bot)

    async def record(self, turn: Turn, decisions: Sequence[Decision]) -> None:
        if not decisions:
            return
        place = turn.place
        who = {
            "turn": turn.turn_id,
            "platform": place.platform,
            "workspace": place.workspace,
            "channel": place.channel,
            "user": turn.author.id,
        }
        for d in decisions:
            self._log.info(
                "moderation_decision",
                stage=d.stage,
                category=d.category,
                action=d.action,
                source=d.source,
                detail=d.detail,
                turn_id=turn.turn_id,
                platform=place.platform,
                workspace=place.workspace,
                channel=place.channel,
                user=turn.author.id,
            )
        here = self.workspace_counters_key(place.platform, place.workspace)
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                for d in decisions:
                    fields = {
                        **who,
                        "stage": d.stage,
                        "category": d.category,
                        "action": d.action,
                        "source": d.source,
                        "detail": d.detail,
                    }
                    pipe.xadd(self.stream, fields, maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
                    pipe.hincrby(self.counters_key, f"{d.stage}:{d.action}:{d.category}", 1)
                    pipe.hincrby(here, f"{d.stage}:{d.action}:{d.category}", 1)
                await pipe.execute()
        except RedisError as exc:
            self._log.warning("moderation_event_not_saved", error=type(exc).__name__)

    async def count(self, name: str, amount: int = 1) -> None:
        try:
            await self._r.hincrby(self.counters_key, name, amount)
        except RedisError as exc:
            self._log.warning("safety_counter_not_saved", error=type(exc).__name__)

    def workspace_counters_key(self, platform: str, workspace: str) -> str:
        return f"{self.counters_key}:{platform}:{workspace or '-'}"

    async def counters(self, *, platform: str = "", workspace: str = "") -> dict[str, int]:
        """The bot's counters, or (with ``platform``) those of one workspace or guild only."""
        key = self.workspace_counters_key(platform, workspace) if platform else self.counters_key
        raw: Any = await self._r.hgetall(key)
        return {str(k): int(v) for k, v in raw.items()}

    async def recent(
        self, *, platform: str, workspace: str, count: int, scan: int = 2_000
    ) -> list[dict[str, Any]]:
        """The newest ``count`` events of one workspace (looking at most ``scan`` entries back)."""
        entries: Any = await self._r.xrevrange(self.stream, count=scan)
        out: list[dict[str, Any]] = []
        for entry_id, fields in entries:
            if fields.get("platform") == platform and fields.get("workspace") == workspace:
                out.append({"id": entry_id, "ms": int(entry_id.split("-")[0]), **fields})
                if len(out) >= count:
                    break
        return out

    async def forget_user(self, platform: str, user_id: str, *, batch: int = 500) -> int:
        """Delete every event about one user; returns how many."""
        removed = 0
        start = "-"
        while True:
            entries: Any = await self._r.xrange(self.stream, min=start, count=batch)
            if not entries:
                return removed
            mine = [eid for eid, f in entries if f.get("user") == user_id and f.get("platform") == platform]
            if mine:
                removed += int(await self._r.xdel(self.stream, *mine))
            if len(entries) < batch:
                return removed
            start = "(" + entries[-1][0]
