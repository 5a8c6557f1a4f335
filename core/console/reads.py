"""What the console's pages read from Redis: bounded reads of what memory, safety and Slack already store.

Each function makes one or two pipelined round trips; none scans keys. Conversations are found through the
console's recent index (:class:`core.console.stats.DailyStats`), never with SCAN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from core.console.stats import DailyStats
from core.keys import KeySpace
from core.memory import StoredMessage, decode
from core.types import Place

TRANSCRIPT_MESSAGES = 200  # the newest messages a transcript shows
EVENTS_SCANNED = 2_000  # moderation events looked at for a transcript or the moderation page


@dataclass(frozen=True, slots=True)
class ConversationRow:
    place: Place
    last: float
    persona: str
    messages: int
    paused: bool


@dataclass(frozen=True, slots=True)
class Transcript:
    place: Place
    meta: Mapping[str, str]
    messages: Sequence[StoredMessage]
    feedback: Mapping[str, Mapping[str, int]]  # turn id -> {"up": n, "down": n}
    decisions: Mapping[str, Sequence[Mapping[str, str]]]  # turn id -> moderation events

    @property
    def paused(self) -> bool:
        return bool(self.meta.get("paused"))


@dataclass(frozen=True, slots=True)
class Filters:
    platform: str = ""
    workspace: str = ""
    channel: str = ""
    user: str = ""

    def matches(self, place: Place) -> bool:
        return (
            (not self.platform or place.platform == self.platform)
            and (not self.workspace or self.workspace in place.workspace)
            and (not self.channel or self.channel in place.channel)
        )


@dataclass
class ModerationView:
    events: list[dict[str, Any]] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    blocked: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (platform, workspace) -> users


class ConsoleReads:
    def __init__(self, client: aioredis.Redis, keys: KeySpace, stats: DailyStats, events_stream: str) -> None:
        self._r = client
        self.keys = keys
        self.stats = stats
        self.events_stream = events_stream

    async def conversations(self, filters: Filters, limit: int = 100) -> list[ConversationRow]:
        recent = [(p, ts) for p, ts in await self.stats.recent(self.stats.recent_max) if filters.matches(p)]
        if filters.user and recent:
            async with self._r.pipeline(transaction=False) as pipe:
                for place, _ in recent:
                    pipe.sismember(self.keys.authors(place), filters.user)
                wrote: list[Any] = await pipe.execute()
            recent = [item for item, yes in zip(recent, wrote, strict=True) if yes]
        recent = recent[:limit]
        if not recent:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for place, _ in recent:
                pipe.hgetall(self.keys.meta(place))
            metas: list[Any] = await pipe.execute()
        return [
            ConversationRow(
                place, ts, meta.get("persona", ""), int(meta.get("seq", 0)), bool(meta.get("paused"))
            )
            for (place, ts), meta in zip(recent, metas, strict=True)
        ]

    async def transcript(self, place: Place) -> Transcript:
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.lrange(self.keys.messages(place), -TRANSCRIPT_MESSAGES, -1)
            pipe.hgetall(self.keys.meta(place))
            pipe.xrevrange(self.events_stream, count=EVENTS_SCANNED)
            raw, meta, events = await pipe.execute()
        messages = [decode(m) for m in raw]
        turns = list(dict.fromkeys(m.turn_id for m in messages if m.role == "assistant" and m.turn_id))
        feedback: dict[str, dict[str, int]] = {}
        if turns:
            async with self._r.pipeline(transaction=False) as pipe:
                for turn_id in turns:
                    pipe.hgetall(self.keys.scoped("feedback", turn_id))  # the Slack adapter's votes
                votes: list[Any] = await pipe.execute()
            for turn_id, by_user in zip(turns, votes, strict=True):
                cast = [v for k, v in by_user.items() if not k.startswith("_")]
                if cast:
                    feedback[turn_id] = {"up": cast.count("up"), "down": cast.count("down")}
        mine = {m.turn_id for m in messages}
        decisions: dict[str, list[dict[str, str]]] = {}
        for _entry_id, fields in reversed(events):
            if (
                fields.get("turn") in mine
                and fields.get("platform") == place.platform
                and fields.get("channel") == place.channel
            ):
                decisions.setdefault(fields["turn"], []).append(fields)
        return Transcript(place, meta, messages, feedback, decisions)

    async def moderation(self, category: str = "", action: str = "", limit: int = 200) -> ModerationView:
        view = ModerationView()
        places = {(p.platform, p.workspace) for p, _ in await self.stats.recent(self.stats.recent_max)}
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.xrevrange(self.events_stream, count=EVENTS_SCANNED)
            ordered = sorted(places)
            for platform, workspace in ordered:
                pipe.smembers(self.keys.scoped("safety", "blocked", platform, workspace))
            results: list[Any] = await pipe.execute()
        events = results[0]
        view.categories = sorted({f.get("category", "") for _, f in events} - {""})
        view.actions = sorted({f.get("action", "") for _, f in events} - {""})
        for entry_id, fields in events:
            if category and fields.get("category") != category:
                continue
            if action and fields.get("action") != action:
                continue
            view.events.append({"id": entry_id, "ms": int(entry_id.split("-")[0]), **fields})
            if len(view.events) >= limit:
                break
        for (platform, workspace), members in zip(ordered, results[1:], strict=True):
            if members:
                view.blocked[(platform, workspace)] = sorted(members)
        return view
