"""The handoff inbox's own state: who works a handoff, its status, and the team's internal notes.

Beside each handoff's hash (``console:handoff:<conversation>``, written when the bot hands off) the inbox
sets ``assignee`` and ``state`` (``assigned`` or ``waiting``: on the customer); ``resolved`` is the resume
itself. Notes are a capped list ``console:handoff:<conversation>:notes`` of JSON entries. Everything
expires with the handoff's retention. Notes are for the team: they are never posted nor shown to the model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from core.console.stats import DailyStats, HandoffRow
from core.types import Place

NOTES_KEPT = 200
NOTE_CHARS = 4_000
STATES = ("open", "assigned", "waiting")  # set from the inbox; "resolved" is Resume


@dataclass(frozen=True, slots=True)
class Note:
    ts: float
    account: str
    text: str


class Inbox:
    def __init__(self, client: aioredis.Redis, stats: DailyStats) -> None:
        self._r = client
        self.stats = stats

    def notes_key(self, place: Place) -> str:
        return self.stats.handoff_key(place) + ":notes"

    async def _set(self, place: Place, values: dict[str, str]) -> None:
        key = self.stats.handoff_key(place)
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=values)  # type: ignore[arg-type]
            pipe.expire(key, self.stats.retention_days * 86_400)
            await pipe.execute()

    async def assign(self, place: Place, assignee: str) -> None:
        await self._set(place, {"assignee": assignee, "state": "assigned" if assignee else ""})

    async def set_state(self, place: Place, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"status must be one of {', '.join(STATES)} (resolve with Resume)")
        await self._set(place, {"state": "" if state == "open" else state})

    async def add_note(self, place: Place, account: str, text: str) -> Note:
        note = Note(round(time.time(), 3), account, text.strip()[:NOTE_CHARS])
        key = self.notes_key(place)
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.rpush(key, json.dumps({"ts": note.ts, "account": note.account, "text": note.text}))
            pipe.ltrim(key, -NOTES_KEPT, -1)
            pipe.expire(key, self.stats.retention_days * 86_400)
            await pipe.execute()
        return note

    async def notes(self, place: Place) -> list[Note]:
        raw: Any = await self._r.lrange(self.notes_key(place), 0, -1)
        out = []
        for entry in raw:
            try:
                data = json.loads(entry)
                out.append(Note(float(data["ts"]), str(data["account"]), str(data["text"])))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    async def row(self, place: Place) -> HandoffRow | None:
        """The handoff of one conversation (None: it never handed off, or that expired)."""
        key = self.stats.handoff_key(place)
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.hget(self.stats.meta_key(place), "paused")
            info, paused = await pipe.execute()
        if not info:
            return None
        return HandoffRow.of(place, info, paused)


def counts(rows: Sequence[HandoffRow]) -> dict[str, int]:
    """Handoffs per status (the navigation's badges)."""
    out = dict.fromkeys(("open", "assigned", "waiting", "resolved"), 0)
    for row in rows:
        out[row.status] += 1
    return out
