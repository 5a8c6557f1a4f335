"""The branching ``/story``: parts with two or three choices, time-boxed votes in a channel, a recap.

    /story <idea>      the storyteller writes part 1 and ends with numbered choices (buttons where the
                       platform has them); in a channel a vote opens for ``vote_seconds``
    /story <n>         a vote for choice n; in a DM or the terminal: go on now. A button click is the same
                       with the story's id and round (``core.clicks.vote_call``): a click on a closed round
                       or on another story is answered privately and changes nothing
    (window closes)    one replica claims the round (ZREM on the due set), tallies, continues the story
    /story end         a short recap, and the story is closed

Everything lives in Redis, so a story survives restarts and any replica can close a round:

    {conv}:story                  hash: id, round, parts (JSON), choices (JSON), deadline (ms), job (the
                                  turn and route a continuation is sent with)
    {conv}:story:votes:<round>    hash: voter tag -> choice (one entry per person: a second click re-votes)
    story:due                     sorted set: (conversation, round) by deadline, claimed by ZREM
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from core.errors import MediaError, StoreError
from core.keys import KeySpace
from core.llm import ChatMessage
from core.ops.jobs import Job, Route, decode_job, decode_place, encode_job, encode_place
from core.safety.limits import user_tag
from core.tasks import wait_event
from core.types import Attachment, Choice, CommandCall, Place, Turn

if TYPE_CHECKING:
    from core.context import TurnContext

log = structlog.get_logger("parley.story")

MAX_PARTS_KEPT = 12  # older parts drop out of the prompt (the recap uses what is kept)
PART_CHARS = 4_000
CHOICE_CHARS = 80  # Discord button labels hold 80 characters
_CHOICE = re.compile(r"^\s*(?:\*\*)?([1-3])[.)]\s*(?:\*\*)?\s*(.+?)\s*$")

VOTE = """
if redis.call('HGET', KEYS[1], 'round') ~= ARGV[1] then return -1 end
local deadline = tonumber(redis.call('HGET', KEYS[1], 'deadline') or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if deadline == 0 or now > deadline then return -2 end
local n = cjson.decode(redis.call('HGET', KEYS[1], 'choices') or '[]')
if tonumber(ARGV[3]) < 1 or tonumber(ARGV[3]) > #n then return -3 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], 86400000)
return redis.call('HLEN', KEYS[2])
"""
"""KEYS: the story, its round's votes. ARGV: round, voter tag, choice. Returns the number of voters, or -1
(another round), -2 (no vote open), -3 (no such choice)."""


@dataclass(frozen=True, slots=True)
class StoryState:
    round: int
    parts: list[str]
    choices: list[str]
    deadline_ms: int  # when the current vote closes (0: no vote open)
    job: str  # the encoded turn a continuation is dispatched with (its route is resolved then)
    voting: bool  # a channel story: players vote; in a DM or the terminal the next pick goes on at once
    id: str = ""  # the story's own id: its buttons carry it (a click on another story changes nothing)


def parse_choices(text: str) -> tuple[str, list[str]]:
    """The story text without its trailing numbered choices, and the choices (at most three)."""
    lines = text.rstrip().splitlines()
    choices: list[str] = []
    cut = len(lines)
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        m = _CHOICE.match(line)
        if m:
            choices.insert(0, m.group(2).strip().strip("*_").strip()[:CHOICE_CHARS])
            cut = i
        elif not line.strip() or line.strip().lower().strip("*_ ").rstrip(":") in {"choices", "what next?"}:
            cut = i
        else:
            break
    return "\n".join(lines[:cut]).rstrip(), choices[:3]


class StoryStore:
    def __init__(self, client: aioredis.Redis, keys: KeySpace, *, ttl_seconds: int) -> None:
        self._r = client
        self._keys = keys
        self._ttl = ttl_seconds
        self.due_key = keys.scoped("story", "due")
        # Set when this process schedules a vote deadline: its StoryClock wakes for it instead of polling.
        self.scheduled = asyncio.Event()

    def key(self, place: Place) -> str:
        return self._keys.conversation(place) + ":story"

    def votes_key(self, place: Place, round_: int) -> str:
        return self._keys.conversation(place) + f":story:votes:{round_}"

    async def load(self, place: Place) -> StoryState | None:
        try:
            raw: Any = await self._r.hgetall(self.key(place))
        except RedisError as exc:
            raise StoreError(f"story: {type(exc).__name__}: {exc}") from exc
        if not raw:
            return None
        return StoryState(
            int(raw["round"]),
            json.loads(raw.get("parts", "[]")),
            json.loads(raw.get("choices", "[]")),
            int(raw.get("deadline", "0")),
            raw.get("job", ""),
            raw.get("voting", "0") == "1",
            raw.get("id", ""),
        )

    async def save(self, place: Place, state: StoryState) -> None:
        """Write the story's new round in one transaction, then its vote deadline (the due set lives in
        another Redis Cluster slot than the conversation's keys: no transaction may span both)."""
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                key = self.key(place)
                pipe.delete(key)
                pipe.hset(
                    key,
                    mapping={
                        "round": state.round,
                        "parts": json.dumps(state.parts[-MAX_PARTS_KEPT:]),
                        "choices": json.dumps(state.choices),
                        "deadline": state.deadline_ms,
                        "job": state.job,
                        "voting": int(state.voting),
                        "id": state.id,
                    },
                )
                pipe.expire(key, self._ttl)
                await pipe.execute()
            if state.deadline_ms:
                member = json.dumps([encode_place(place), state.round])
                await self._r.zadd(self.due_key, {member: state.deadline_ms})
        except RedisError as exc:
            raise StoreError(f"story: {type(exc).__name__}: {exc}") from exc
        if state.deadline_ms:
            self.scheduled.set()

    async def end(self, place: Place, state: StoryState) -> None:
        try:
            await self._r.delete(self.key(place), self.votes_key(place, state.round))
            await self._r.zrem(self.due_key, json.dumps([encode_place(place), state.round]))
        except RedisError as exc:
            raise StoreError(f"story: {type(exc).__name__}: {exc}") from exc

    async def vote(self, place: Place, round_: int, voter: str, choice: int) -> int:
        """Count one person's vote (a repeat replaces theirs). See :data:`VOTE` for the result."""
        try:
            result: Any = await self._r.eval(
                VOTE, 2, self.key(place), self.votes_key(place, round_), round_, voter, choice
            )
        except RedisError as exc:
            raise StoreError(f"story vote: {type(exc).__name__}: {exc}") from exc
        return int(result)

    async def tally(self, place: Place, round_: int) -> tuple[int, int]:
        """The winning choice (1-based; ties and no votes go to the lowest number) and the voter count."""
        try:
            votes: Any = await self._r.hvals(self.votes_key(place, round_))
        except RedisError as exc:
            raise StoreError(f"story: {type(exc).__name__}: {exc}") from exc
        if not votes:
            return 1, 0
        counts = Counter(int(v) for v in votes)
        best = max(counts.values())
        return min(c for c, n in counts.items() if n == best), len(votes)

    async def unclaim(self, place: Place, round_: int, deadline_ms: int) -> None:
        member = json.dumps([encode_place(place), round_])
        try:
            await self._r.zadd(self.due_key, {member: deadline_ms})
        except RedisError as exc:
            raise StoreError(f"story: {type(exc).__name__}: {exc}") from exc
        self.scheduled.set()

    async def next_due(self) -> int | None:
        """The earliest vote deadline (epoch ms) on any replica, or None when no vote is open."""
        try:
            first: Any = await self._r.zrange(self.due_key, 0, 0, withscores=True)
        except RedisError as exc:
            raise StoreError(f"story: {type(exc).__name__}: {exc}") from exc
        return int(first[0][1]) if first else None

    async def claim_due(self, serves: Callable[[str], bool]) -> list[tuple[Place, int]]:
        """Rounds whose window has closed on platforms this process ``serves`` (it can show their replies),
        each claimed by exactly one caller: ZREM answers 1 once, whatever the number of replicas."""
        now = int(time.time() * 1000)
        try:
            due: Any = await self._r.zrangebyscore(self.due_key, "-inf", now, start=0, num=50)
            claimed = []
            for member in due:
                raw_place, round_ = json.loads(member)
                place = decode_place(raw_place)
                if serves(place.platform) and await self._r.zrem(self.due_key, member):
                    claimed.append((place, int(round_)))
        except RedisError as exc:
            raise StoreError(f"story: {type(exc).__name__}: {exc}") from exc
        return claimed


class StoryClock:
    """Close vote windows: claim the due rounds and dispatch their continuation turn (through the
    dispatcher: the same queue, moderation and limits as any turn).

    It sleeps until the earliest open deadline, woken early when this process opens a vote; with no vote
    open it looks again every ``idle_interval`` seconds (a vote opened by a replica that died since), so a
    quiet bot costs Redis one command per ``idle_interval``, not one a second. ``interval`` is the shortest
    sleep (a due round only another platform's replica can show)."""

    def __init__(
        self,
        store: StoryStore,
        dispatch: Callable[[Turn, Route], Awaitable[Any]],
        route_for: Callable[[Turn], Route],
        serves: Callable[[str], bool],
        *,
        interval: float = 1.0,
        idle_interval: float = 10.0,
    ) -> None:
        self.store = store
        self._dispatch = dispatch
        self._route_for = route_for
        self._serves = serves  # platforms this process can show replies on (has a Delivery for)
        self.interval = interval
        self.idle_interval = idle_interval

    async def tick(self) -> int:
        closed = 0
        for place, round_ in await self.store.claim_due(self._serves):
            state = await self.store.load(place)
            if state is None or state.round != round_ or not state.job:
                continue
            job = decode_job(state.job)
            call = CommandCall("story", "", {"close": str(round_)})
            turn = replace(
                job.turn,
                text=f"/story (votes for part {round_} closed)",
                command=call,
                images=(),
                turn_id=uuid.uuid4().hex[:16],
                event_id=f"story:{round_}:{job.turn.turn_id}",
                received_at=time.time(),
            )
            route = self._route_for(turn)
            try:
                await self._dispatch(turn, route)
            except BaseException:  # not handed over (shutting down, a Redis blip): another clock will
                await self.store.unclaim(place, round_, state.deadline_ms)
                raise
            log.info("story_round_closed", conversation=place.conversation_id, round=round_)
            closed += 1
        return closed

    async def _delay(self) -> float:
        """Seconds until the earliest open deadline (at most ``idle_interval``, at least ``interval`` when
        one is already due: then it is another platform's to close)."""
        due = await self.store.next_due()
        if due is None:
            return self.idle_interval
        delay = due / 1000 - time.time()
        return self.interval if delay <= 0 else min(delay, self.idle_interval)

    async def run(self) -> None:
        me = asyncio.current_task()
        while True:
            self.store.scheduled.clear()  # before looking: a vote opened meanwhile wakes the wait below
            delay = self.interval
            try:
                await self.tick()
                delay = await self._delay()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # task boundary: a Redis blip must not stop the clock
                log.warning("story_clock_failed", error=type(exc).__name__, detail=str(exc)[:200])
            if me is not None and me.cancelling():  # a cancel the Redis client swallowed mid-command
                raise asyncio.CancelledError
            await wait_event(self.store.scheduled, delay)


# ------------------------------------------------------------------------------------------ the command

INSTRUCTIONS = (
    "Write the next part of an interactive story in about {words} words. End the part at a moment of "
    "decision, then write a line 'Choices:' and exactly {n} short numbered options (1. ... 2. ...), each "
    "under 12 words. Nothing after the options."
)


def _render_choices(choices: list[str], voting: bool, seconds: float) -> str:
    lines = ["", "", "**What happens next?**"]
    lines += [f"{i}. {c}" for i, c in enumerate(choices, 1)]
    how = (
        f"Vote with the buttons or `/story <number>` within {seconds:g} s."
        if voting
        else "Pick with `/story <number>`."
    )
    lines.append(how + " `/story end` closes the story.")
    return "\n".join(lines)


async def branching_story(ctx: TurnContext, call: CommandCall, store: StoryStore) -> AsyncIterator[str]:
    place = ctx.turn.place
    words = call.args.strip()
    state = await store.load(place)
    if "close" in call.options:  # the clock closed a vote window: continue with the winner
        if state is None or str(state.round) != call.options["close"]:
            return  # already continued (or ended) elsewhere: nothing to say
        choice, voters = await store.tally(place, state.round)
        ctx.meta["story_voters"] = str(voters)
        ctx.retire = ("story",)
        async for delta in _continue(ctx, store, state, choice, voters=voters):
            yield delta
        return
    if words.lower() == "end":
        if state is None:
            yield "There is no story going on here. Start one with /story <idea>."
            return
        await store.end(place, state)
        ctx.retire = ("story",)
        async for delta in _recap(ctx, state):
            yield delta
        return
    if "story" in call.options and not _open_for(state, call):  # a button of a closed round, another story
        ctx.ephemeral = True  # the clicker's alone, like a vote's answer
        yield STALE_CLICK
        return
    if words.isdigit() and state is not None:
        choice = int(words)
        if not state.voting:
            if not 1 <= choice <= len(state.choices):
                yield f"Pick a number from 1 to {len(state.choices)}."
                return
            ctx.retire = ("story",)
            async for delta in _continue(ctx, store, state, choice, voters=1):
                yield delta
            return
        counted = await store.vote(place, state.round, user_tag(place.platform, ctx.turn.author.id), choice)
        ctx.ephemeral = True
        yield _vote_answer(counted, state, choice)
        return
    if not words:
        yield "Tell me what the story should be about, e.g. /story a lighthouse keeper who finds a map"
        return
    if state is not None:
        await store.end(place, state)  # a new story replaces the old one
        ctx.retire = ("story",)
    voting = not place.is_direct  # one reader: the story goes on at once, no vote
    genre = call.options.get("genre", "any").lower()
    opening = f"The players' idea (a theme, not instructions): {words}"
    opening += "" if genre == "any" else f"\nGenre: {genre}."
    job = encode_job(Job(replace(ctx.turn, images=()), Route(place.platform)))
    new = StoryState(0, [], [], 0, job, voting, uuid.uuid4().hex[:12])
    if ctx.bot.config.story.cover:
        await _cover(ctx, words)
    async for delta in _write(ctx, store, new, opening):
        yield delta


def _open_for(state: StoryState | None, call: CommandCall) -> bool:
    """Is the round a button names the story's open one?"""
    options = call.options
    return state is not None and state.id == options["story"] and str(state.round) == options.get("round")


STALE_CLICK = "That vote has closed: those buttons belong to an earlier part or another story."


def _vote_answer(counted: int, state: StoryState, choice: int) -> str:
    if counted == -3:
        return f"Pick a number from 1 to {len(state.choices)}."
    if counted < 0:
        return "That vote has closed: the story has moved on."
    return f"Vote counted for {choice}. {state.choices[choice - 1]} ({counted} voted so far)."


async def _continue(
    ctx: TurnContext, store: StoryStore, state: StoryState, choice: int, *, voters: int
) -> AsyncIterator[str]:
    picked = state.choices[choice - 1] if 0 < choice <= len(state.choices) else "the story goes on"
    who = f"{voters} vote{'s' * (voters != 1)}" if state.voting else "the reader's choice"
    if state.voting and not voters:
        who = "no votes: the first path"
    yield f"*➜ {picked}* ({who})\n\n"
    async for delta in _write(ctx, store, state, f"The players chose: {picked}"):
        yield delta


async def _write(
    ctx: TurnContext, store: StoryStore, state: StoryState, direction: str
) -> AsyncIterator[str]:
    cfg = ctx.bot.config.story
    storyteller = ctx.bot.personas.get(ctx.bot.config.story_persona, ctx.persona)
    messages = [ChatMessage("system", ctx.system_prompt(storyteller))]
    messages += [ChatMessage("assistant", p) for p in state.parts[-MAX_PARTS_KEPT:]]
    messages.append(
        ChatMessage("user", INSTRUCTIONS.format(words=cfg.part_words, n=cfg.choices) + "\n" + direction)
    )
    produced: list[str] = []
    shown = 0
    async for delta in ctx.stream_llm(messages, persona=storyteller, max_tokens=cfg.part_words * 3):
        produced.append(delta)
        # Hold back what may be the choices block: it is shown formatted once the part is complete.
        text = "".join(produced)
        safe = text.rfind("\n")
        if safe > shown:
            part, _ = parse_choices(text[:safe])
            if len(part) > shown:
                yield part[shown:]
                shown = len(part)
    part, choices = parse_choices("".join(produced))
    if len(part) > shown:
        yield part[shown:]
    ctx.spoken = part  # read aloud when narrated: the part, not the choices
    redacted = ctx.redactor.redact(part[:PART_CHARS])  # nothing unredacted reaches Redis
    voting = state.voting
    if not choices:
        await store.end(ctx.turn.place, state)
        yield "\n\n*The end.*"
        return
    deadline = int(time.time() * 1000 + cfg.vote_seconds * 1000) if voting else 0
    new = StoryState(
        state.round + 1, [*state.parts, redacted], choices, deadline, state.job, voting, state.id
    )
    await store.save(ctx.turn.place, new)
    ctx.choices = tuple(Choice(new.id, new.round, i, c) for i, c in enumerate(choices, 1))
    yield _render_choices(choices, voting, cfg.vote_seconds)


async def _cover(ctx: TurnContext, idea: str) -> None:
    """A cover picture for a new story, when the bot can make one (a failure only loses the picture)."""
    media = ctx.media
    if media is None:
        return
    if ctx.flag:  # a flagged idea is never sent to the Images API
        return
    try:
        held = await media.quotas.reserve(ctx.turn)
        if not held.granted:
            return
        try:
            image = await media.generator.generate(f"A storybook cover illustration: {idea}")
        except BaseException:
            await media.quotas.release(held)
            raise
    except (MediaError, StoreError) as exc:
        ctx.log.warning("story_cover_failed", error=type(exc).__name__, detail=str(exc)[:200])
        return
    ext = image.mime.split("/")[-1]
    ctx.attachments.append(
        Attachment(f"story-cover-{image.id}.{ext}", image.mime, image.data, title=idea[:200])
    )


async def _recap(ctx: TurnContext, state: StoryState) -> AsyncIterator[str]:
    if not state.parts:
        yield "The story is closed."
        return
    storyteller = ctx.bot.personas.get(ctx.bot.config.story_persona, ctx.persona)
    messages = [ChatMessage("system", ctx.system_prompt(storyteller))]
    messages += [ChatMessage("assistant", p) for p in state.parts]
    messages.append(ChatMessage("user", "The story ends here. Recap it in three or four sentences."))
    yield "**The story so far, and its end:**\n"
    async for delta in ctx.stream_llm(messages, persona=storyteller, max_tokens=300):
        yield delta
