"""Daily aggregates for the operator console, kept small in Redis.

Per bot and UTC day, one hash ``parley:<bot>:console:day:<YYYYMMDD>`` whose fields are
``<platform>|<workspace>|<metric>``: answers, refusals, handoffs, errors, commands, up, down, tok_in, tok_out,
cost (estimated dollars) and ``t<i>``, the answer-time histogram (fixed buckets, :data:`BUCKETS`). A day's
hash expires ``retention_days`` after its last write, so the store holds at most that many days.

Beside them, two bounded indexes the console lists from instead of scanning every conversation:
``console:recent`` (conversations by last turn) and ``console:handoffs`` (handed-off conversations by the
time of the request), each a sorted set trimmed to the newest ``recent_max`` members, plus one small hash per
handoff (``console:handoff:<conversation>``: requested, turn, user, resumed, resumed_by).

Writes are queued on a pipeline the caller owns (:meth:`DailyStats.queue`), so a turn's aggregates ride on
its final memory write; :meth:`DailyStats.record` does its own round trip for callers without one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from core.bot import BotSpec
from core.console.places import decode_place, encode_place
from core.console.settings import ConsoleSettings, PriceTable
from core.keys import KeySpace
from core.settings import Settings
from core.types import Place, ReplyKind, ReplyResult, Turn

if TYPE_CHECKING:
    from core.console.search import SearchIndex

log = structlog.get_logger("parley.console")

BUCKETS: tuple[float, ...] = (0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, math.inf)
"""Upper bounds (seconds) of the answer-time histogram's buckets."""

COUNTS = ("answers", "refusals", "handoffs", "errors", "commands", "up", "down", "tok_in", "tok_out")
_KIND_METRIC = {
    ReplyKind.ANSWER: "answers",
    ReplyKind.REFUSAL: "refusals",
    ReplyKind.ERROR: "errors",
    ReplyKind.COMMAND: "commands",
}
_SEP = "|"


DEFAULT_RETENTION_DAYS = 35


UNANSWERED_MAX = 5_000  # entries kept in the unanswered index (newest)
_KIND_SEP = "\x1e"


def unanswered_key(keys: KeySpace) -> str:
    return keys.scoped("console", "unanswered")


def queue_unanswered(pipe: Any, keys: KeySpace, kind: str, turn_id: str, place: Place, now: float) -> None:
    """Note a turn the bot could not answer (``not_covered``, ``handoff``, ``down``): the console's list of
    what to improve. The question's text is read from the transcript, so /forget and retention apply."""
    key = unanswered_key(keys)
    pipe.zadd(key, {_KIND_SEP.join((kind, turn_id, encode_place(place))): now})
    pipe.zremrangebyrank(key, 0, -(UNANSWERED_MAX + 1))


def decode_unanswered(member: str) -> tuple[str, str, Place]:
    kind, turn_id, place = ([*member.split(_KIND_SEP, 2), "", ""])[:3]
    return kind, turn_id, decode_place(place)


def queue_vote(
    pipe: Any,
    keys: KeySpace,
    place: Place,
    vote: str,
    previous: str | None = None,
    *,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    turn_id: str = "",
) -> None:
    """Queue a 👍/👎 on today's aggregates (``vote`` "up" or "down"; ``previous`` the vote it replaces); a
    👎 on ``turn_id`` also goes to the unanswered list."""
    now = time.time()
    key = keys.scoped("console", "day", day_of(now))
    prefix = f"{_clean(place.platform)}{_SEP}{_clean(place.workspace)}{_SEP}"
    if vote in ("up", "down"):
        pipe.hincrby(key, prefix + vote, 1)
    if previous in ("up", "down"):
        pipe.hincrby(key, prefix + previous, -1)
    pipe.expire(key, retention_days * 86_400)
    if vote == "down" and turn_id:
        queue_unanswered(pipe, keys, "down", turn_id, place, now)


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%d")


def bucket_of(seconds: float) -> int:
    return next(i for i, upper in enumerate(BUCKETS) if seconds <= upper)


def _clean(part: str) -> str:
    return part.replace(_SEP, "_")


@dataclass
class Tally:
    """One (day, platform, workspace) row of the aggregates, or a sum of rows."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    cost: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    hours: list[int] = field(default_factory=lambda: [0] * 24)  # replies by UTC hour

    def add(self, other: Tally) -> None:
        for name, value in other.counts.items():
            self.counts[name] = self.counts.get(name, 0) + value
        self.cost += other.cost
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]
        self.hours = [a + b for a, b in zip(self.hours, other.hours, strict=True)]

    def take(self, metric: str, raw: str) -> None:
        if metric.startswith("h") and metric[1:].isdigit() and int(metric[1:]) < 24:
            self.hours[int(metric[1:])] += int(raw)
        elif metric == "cost":
            self.cost += float(raw)
        elif metric.startswith("t") and metric[1:].isdigit():
            index = int(metric[1:])
            if index < len(BUCKETS):
                self.histogram[index] += int(raw)
        elif metric in self.counts:
            self.counts[metric] += int(raw)

    def percentile(self, q: float) -> float | None:
        """The answer time below which ``q`` of answers fall, interpolated in its bucket (None: no data)."""
        total = sum(self.histogram)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for index, count in enumerate(self.histogram):
            if count and seen + count >= rank:
                lower = BUCKETS[index - 1] if index else 0.0
                upper = BUCKETS[index]
                if math.isinf(upper):
                    return lower
                return lower + (upper - lower) * (rank - seen) / count
            seen += count
        return BUCKETS[-2]

    @property
    def thumbs_up_rate(self) -> float | None:
        votes = self.counts["up"] + self.counts["down"]
        return self.counts["up"] / votes if votes else None


@dataclass(frozen=True, slots=True)
class DayRow:
    day: str  # YYYYMMDD
    platform: str
    workspace: str
    tally: Tally


@dataclass(frozen=True, slots=True)
class HandoffRow:
    place: Place
    requested: float
    turn_id: str
    user: str
    open: bool  # the conversation is still paused
    resumed: float | None
    resumed_by: str
    assignee: str = ""
    state: str = ""  # what the inbox set: assigned, waiting (empty: open)
    name: str = ""  # the asker's display name, where the platform gave one

    @property
    def status(self) -> str:
        """open, assigned, waiting (on the customer) or resolved (the bot answers again)."""
        if not self.open:
            return "resolved"
        if self.state in ("assigned", "waiting"):
            return self.state
        return "assigned" if self.assignee else "open"

    @classmethod
    def of(cls, place: Place, info: Mapping[str, str], paused: object, requested: float = 0.0) -> HandoffRow:
        """A row from the handoff's Redis hash and whether the conversation is still paused."""
        resumed = info.get("resumed")
        return cls(
            place=place,
            requested=float(info.get("requested", requested)),
            turn_id=info.get("turn", ""),
            user=info.get("user", ""),
            open=bool(paused),
            resumed=float(resumed) if resumed else None,
            resumed_by=info.get("resumed_by", ""),
            assignee=info.get("assignee", ""),
            state=info.get("state", ""),
            name=info.get("name", ""),
        )

    def waiting(self, now: float) -> float:
        end = now if self.open or self.resumed is None else self.resumed
        return max(0.0, end - self.requested)


def parse_day(raw: Mapping[str, str], day: str) -> list[DayRow]:
    """A day's hash as rows per (platform, workspace)."""
    rows: dict[tuple[str, str], Tally] = {}
    for name, value in raw.items():
        parts = name.split(_SEP)
        if len(parts) != 3:
            continue
        platform, workspace, metric = parts
        rows.setdefault((platform, workspace), Tally()).take(metric, value)
    return [DayRow(day, p, w, t) for (p, w), t in sorted(rows.items())]


def total(rows: Iterable[DayRow]) -> Tally:
    out = Tally()
    for row in rows:
        out.add(row.tally)
    return out


class DailyStats:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        prices: PriceTable,
        *,
        model_for: Callable[[str], str],
        retention_days: int = DEFAULT_RETENTION_DAYS,
        recent_max: int = 500,
        search: SearchIndex | None = None,
    ) -> None:
        self._r = client
        self._keys = keys
        self.prices = prices
        self._model_for = model_for  # persona name -> the model it answers with
        self._ttl = retention_days * 86_400
        self.retention_days = retention_days
        self.recent_max = recent_max
        self.recent_key = keys.scoped("console", "recent")
        self.handoffs_key = keys.scoped("console", "handoffs")
        self.search = search  # the transcripts' word index (core/console/search.py)

    # ------------------------------------------------------------------ keys

    def day_key(self, day: str) -> str:
        return self._keys.scoped("console", "day", day)

    def split_key(self, day: str) -> str:
        """A day's counts by persona and channel: ``persona|<name>|<metric>``, ``channel|<where>|..``."""
        return self._keys.scoped("console", "split", day)

    def meta_key(self, place: Place) -> str:
        """The conversation's memory meta hash (where ``paused`` lives)."""
        return self._keys.meta(place)

    def handoff_key(self, place: Place) -> str:
        return self._keys.scoped("console", "handoff", place.conversation_id)

    # ------------------------------------------------------------------ writes

    def queue(
        self, pipe: Any, turn: Turn, result: ReplyResult, seconds: float, *, now: float | None = None
    ) -> None:
        """Queue one turn's aggregate writes on ``pipe`` (a redis-py pipeline); nothing is sent here."""
        metric = _KIND_METRIC.get(result.kind)
        if metric is None:  # ignored turns (duplicates, paused threads, chatter) are not answers
            return
        now = time.time() if now is None else now
        place = turn.place
        key = self.day_key(day_of(now))
        prefix = f"{_clean(place.platform)}{_SEP}{_clean(place.workspace)}{_SEP}"
        usage = result.usage
        handoff = result.handoff
        if handoff and metric == "answers":
            metric = "handoffs"  # the handoff's reply is counted once, as a handoff, not as an answer
        pipe.hincrby(key, prefix + metric, 1)
        hour = datetime.fromtimestamp(now, UTC).hour
        pipe.hincrby(key, f"{prefix}h{hour:02d}", 1)  # today by the hour
        split = self.split_key(day_of(now))
        pipe.hincrby(split, f"persona{_SEP}{_clean(result.persona or 'default')}{_SEP}{metric}", 1)
        pipe.hincrby(split, f"channel{_SEP}{_clean(place.platform + ' ' + place.channel)}{_SEP}{metric}", 1)
        pipe.expire(split, self._ttl)
        if usage.prompt_tokens:
            pipe.hincrby(key, prefix + "tok_in", usage.prompt_tokens)
        if usage.completion_tokens:
            pipe.hincrby(key, prefix + "tok_out", usage.completion_tokens)
        cost = self.prices.cost(self._model_for(result.persona), usage.prompt_tokens, usage.completion_tokens)
        if cost:
            pipe.hincrbyfloat(key, prefix + "cost", round(cost, 9))
        if result.kind is ReplyKind.ANSWER:
            pipe.hincrby(key, f"{prefix}t{bucket_of(seconds)}", 1)
        pipe.expire(key, self._ttl)
        if handoff:
            queue_unanswered(pipe, self._keys, "handoff", turn.turn_id, place, now)
        elif result.meta.get("kb") == "not_covered":
            queue_unanswered(pipe, self._keys, "not_covered", turn.turn_id, place, now)
        member = encode_place(place)
        pipe.zadd(self.recent_key, {member: now})
        pipe.zremrangebyrank(self.recent_key, 0, -(self.recent_max + 1))  # bounded by size: no TTL needed
        if handoff:
            # Not deferred on a cluster (core/ops/deferred.py): an operator's resume, written at once, must
            # not be wiped by a late delete of the handoff's row.
            pipe = getattr(pipe, "now", pipe)
            hkey = self.handoff_key(place)
            pipe.zadd(self.handoffs_key, {member: now})
            pipe.zremrangebyrank(self.handoffs_key, 0, -(self.recent_max + 1))
            pipe.expire(self.handoffs_key, self._ttl)
            pipe.delete(hkey)
            who = {"requested": f"{now:.3f}", "turn": turn.turn_id, "user": turn.author.id}
            pipe.hset(hkey, mapping={**who, "name": turn.author.display_name[:80]})
            pipe.expire(hkey, self._ttl)

    def index(self, pipe: Any, place: Place, texts: Iterable[str]) -> None:
        """Queue the search index's writes for words written in ``place`` (nothing without an index)."""
        if self.search is not None:
            self.search.queue(pipe, place, texts)

    async def record(self, turn: Turn, result: ReplyResult, seconds: float) -> None:
        """:meth:`queue` in a round trip of its own. Never fails a turn: a Redis error is logged."""
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                self.queue(pipe, turn, result, seconds)
                if len(pipe):
                    await pipe.execute()
        except RedisError as exc:
            log.warning("console_stats_not_saved", bot=self._keys.bot, error=type(exc).__name__)

    def queue_vote(
        self, pipe: Any, place: Place, vote: str, previous: str | None = None, turn_id: str = ""
    ) -> None:
        """A 👍/👎 on an answer (``vote`` "up" or "down"; ``previous`` the vote it replaces; a 👎 on
        ``turn_id`` also goes to the unanswered list)."""
        days = self.retention_days
        queue_vote(pipe, self._keys, place, vote, previous, retention_days=days, turn_id=turn_id)

    async def record_vote(self, place: Place, vote: str, previous: str | None = None) -> None:
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                self.queue_vote(pipe, place, vote, previous)
                await pipe.execute()
        except RedisError as exc:
            log.warning("console_vote_not_saved", bot=self._keys.bot, error=type(exc).__name__)

    async def mark_resumed(self, place: Place, by: str) -> None:
        hkey = self.handoff_key(place)
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hset(hkey, mapping={"resumed": f"{time.time():.3f}", "resumed_by": by})
            pipe.expire(hkey, self._ttl)
            await pipe.execute()

    # ------------------------------------------------------------------ reads (a round trip or two each)

    async def days(self, count: int, *, now: float | None = None) -> list[tuple[str, list[DayRow]]]:
        """The last ``count`` days, oldest first, each with its rows (one round trip)."""
        now = time.time() if now is None else now
        today = datetime.fromtimestamp(now, UTC)
        names = [(today - timedelta(days=back)).strftime("%Y%m%d") for back in range(count - 1, -1, -1)]
        return await self.days_named(names)

    async def days_named(self, names: list[str]) -> list[tuple[str, list[DayRow]]]:
        """The given days (``YYYYMMDD``), each with its rows (one round trip)."""
        async with self._r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.day_key(name))
            raws: list[Any] = await pipe.execute()
        return [(name, parse_day(raw, name)) for name, raw in zip(names, raws, strict=True)]

    async def split(self, days: Iterable[str]) -> dict[str, dict[str, dict[str, int]]]:
        """Counts by persona and channel over ``days``: ``{"persona": {name: {metric: n}}, ...}``."""
        names = list(days)
        async with self._r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.split_key(name))
            raws: list[Any] = await pipe.execute()
        out: dict[str, dict[str, dict[str, int]]] = {"persona": {}, "channel": {}}
        for raw in raws:
            for field_name, value in raw.items():
                parts = field_name.split(_SEP)
                if len(parts) == 3 and parts[0] in out:
                    row = out[parts[0]].setdefault(parts[1], {})
                    row[parts[2]] = row.get(parts[2], 0) + int(value)
        return out

    async def recent(self, limit: int) -> list[tuple[Place, float]]:
        raw: Any = await self._r.zrevrange(self.recent_key, 0, max(0, limit - 1), withscores=True)
        return [(decode_place(member), float(score)) for member, score in raw]

    async def handoffs(self, limit: int, meta_key: Callable[[Place], str]) -> list[HandoffRow]:
        """Newest handoffs first; open while the conversation's meta still says ``paused`` (two round trips,
        so a resume from Slack shows here too)."""
        raw: Any = await self._r.zrevrange(self.handoffs_key, 0, max(0, limit - 1), withscores=True)
        places = [(decode_place(member), float(score)) for member, score in raw]
        if not places:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for place, _ in places:
                pipe.hgetall(self.handoff_key(place))
                pipe.hget(meta_key(place), "paused")
            results: list[Any] = await pipe.execute()
        rows = []
        for index, (place, score) in enumerate(places):
            info: Mapping[str, str] = results[2 * index] or {}
            paused = results[2 * index + 1]
            rows.append(HandoffRow.of(place, info, paused, score))
        return rows


def build_stats(
    client: aioredis.Redis, keys: KeySpace, spec: BotSpec, settings: Settings, console: ConsoleSettings
) -> DailyStats:
    """One bot's aggregates: what its turns write and its console reads."""
    from core.console.search import SearchIndex

    default = settings.openai_model
    models = {name: (p.model or default) for name, p in spec.personas.items()}
    return DailyStats(
        client,
        keys,
        console.price_table,
        model_for=lambda persona: models.get(persona, default),
        retention_days=console.parley_console_retention_days,
        recent_max=console.parley_console_recent,
        search=SearchIndex(client, keys, ttl_seconds=int(spec.config.memory.ttl_days * 86_400)),
    )
