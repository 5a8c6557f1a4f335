"""Conversation memory in Redis: a capped list of messages plus a small meta hash per conversation.

Per turn the engine makes one pipelined read (:meth:`RedisMemory.load`) and one pipelined write
(:meth:`RedisMemory.record`), whatever the conversation's length: the read takes only the list's tail, and
each stored message carries its token count so the window is cut without re-counting.

Messages are stored as ``"<seq>|role␟tokens␟ts␟author id␟author name␟turn id␟text"`` (␟ = U+001F);
``seq`` comes from the meta hash inside one Lua script, so
sequence numbers are dense and ordered even with several replicas writing.

A turn that runs under a conversation lock passes its :class:`Fence` to the final write, which then checks,
in the same script, that the lock's lease is still held (and retires the turn's queue item), so a replica that
lost its lease cannot write behind another's back.

Other parts of the turn ride on the same two round trips: ``also=`` queues a caller's commands (admission's
checks on the read, its quota accounting on the write) on the memory's own pipeline. On Redis Cluster the
write's riders keyed on other nodes (the user's conversation index, the console's aggregates, quota counts)
are sent once a second for all turns together (:mod:`core.ops.deferred`): the write is one round trip there
too.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import LeaseLost, StoreError, StoreUnavailable
from core.keys import KeySpace
from core.ops.deferred import ROOM, DeferredWrites, SlotSplit
from core.ops.recorder import ScriptingPipe
from core.types import Place

# Append ARGV[first..] as messages, numbered from the meta hash's seq; cap the list; note each message's
# author in the conversation's authors set (so /forget finds every conversation a user wrote in, even one
# that others kept alive after the user's own index expired); refresh the TTLs.
# ARGV[1] is the cap, ARGV[2] the TTL in seconds; the author id is a message's fourth field.
_APPEND_BODY = r"""
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
for i = {first}, #ARGV do
  seq = seq + 1
  redis.call('RPUSH', KEYS[1], seq .. '|' .. ARGV[i])
  local author = string.match(ARGV[i], '^[^\31]*\31[^\31]*\31[^\31]*\31([^\31]*)\31')
  if author and author ~= '' then redis.call('SADD', KEYS[{authors}], author) end
end
redis.call('HSET', KEYS[2], 'seq', seq)
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[{authors}], ARGV[2])
return seq
"""

_APPEND = _APPEND_BODY.replace("{first}", "3").replace("{authors}", "3")

# As _APPEND, behind a fence: KEYS[3] must still hold the lease token ARGV[3]; the queue item ARGV[4] (when
# not empty) is removed from the head of the inbox list KEYS[4] in the same atomic step.
_FENCE_CHECK = """
if redis.call('GET', KEYS[3]) ~= ARGV[3] then return -1 end
if ARGV[4] ~= '' and redis.call('LINDEX', KEYS[4], 0) == ARGV[4] then redis.call('LPOP', KEYS[4]) end"""
_APPEND_FENCED = _FENCE_CHECK + _APPEND_BODY.replace("{first}", "5").replace("{authors}", "5")

SETTINGS = ("persona", "paused", "paused_by")
"""Meta fields that are settings made for a conversation (an admin's ``/persona``, a handoff's pause), not
its state: ``/reset`` and ``/forget`` keep them (only ``/persona`` and ``/resume`` change them)."""

# clear_state(msgs, meta, fold, authors): forget a conversation's state (messages, summary, last story,
# sequence, authors) and keep its settings. Shared by /reset (below) and /forget (core/safety/forget.py).
CLEAR_STATE_LUA = (
    "local keep = {"
    + ", ".join(f"['{f}'] = true" for f in SETTINGS)
    + """}
local function clear_state(msgs, meta, fold, authors)
  redis.call('DEL', msgs, fold, authors)
  for _, f in ipairs(redis.call('HKEYS', meta)) do
    if not keep[f] then redis.call('HDEL', meta, f) end
  end
end
"""
)

_RESET = CLEAR_STATE_LUA + "clear_state(KEYS[1], KEYS[2], KEYS[3], KEYS[4])\nreturn 1\n"

# Remove ARGV's entries (one user's messages and the replies to them) from the list KEYS[1]; their author
# ARGV[1] leaves the authors set KEYS[2]. Messages appended meanwhile stay. Returns how many went.
_REMOVE_OWN = """
local removed = 0
for i = 2, #ARGV do
  removed = removed + redis.call('LREM', KEYS[1], 1, ARGV[i])
end
redis.call('SREM', KEYS[2], ARGV[1])
return removed
"""

_SAVE_SUMMARY = """
local upto = tonumber(redis.call('HGET', KEYS[1], 'summary_upto') or '0')
if upto ~= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'summary', ARGV[1], 'summary_upto', ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class Fence:
    """The lease a turn's final write must still hold. All keys share the conversation's hash slot."""

    conversation: str  # KeySpace.conversation(place): the fence applies to this conversation only
    lock_key: str
    token: str
    inbox_key: str = ""  # a queue inbox whose head is ``inbox_item`` while the turn runs
    inbox_item: str = ""
    # The conversation as read with the lock (Redis Cluster: the worker's take and the memory read share a
    # round trip, :meth:`RedisMemory.queue_read`); the turn's load then reads nothing.
    read: ConversationState | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int
    role: str  # "user" or "assistant"
    text: str
    author_id: str = ""
    author_name: str = ""
    ts: float = 0.0
    tokens: int = 0
    turn_id: str = ""


@dataclass(frozen=True, slots=True)
class NewMessage:
    role: str
    text: str
    tokens: int
    author_id: str = ""
    author_name: str = ""
    turn_id: str = ""
    ts: float = field(default_factory=time.time)

    def encode(self) -> str:
        # Unit-separated fields, text last: splitting is several times cheaper than JSON on the hot read
        # path, and the text may hold anything (it is the tail of a bounded split).
        head = (self.role, str(self.tokens), f"{self.ts:.3f}", self.author_id, self.author_name, self.turn_id)
        return _SEP.join(h.replace(_SEP, " ") for h in head) + _SEP + self.text


@dataclass(frozen=True, slots=True)
class Reset:
    """What :meth:`RedisMemory.reset` did."""

    whole: bool  # the conversation's state is gone (its settings stay)
    removed: int = 0  # when not whole: the caller's messages and the replies to them that went


@dataclass(frozen=True, slots=True)
class ConversationState:
    """What one pipelined read tells about a conversation."""

    messages: tuple[StoredMessage, ...] = ()  # the tail, oldest first
    meta: Mapping[str, str] = field(default_factory=dict)
    duplicate: bool = False
    degraded: bool = False  # Redis was unreachable: an empty stand-in, nothing was read
    also: list[Any] | None = None  # results of the commands the caller's ``also`` queued (None: any failed)

    @property
    def summary(self) -> str:
        return self.meta.get("summary", "")

    @property
    def summary_upto(self) -> int:
        return int(self.meta.get("summary_upto", "0"))

    @property
    def last_seq(self) -> int:
        return int(self.meta.get("seq", "0"))

    @property
    def persona(self) -> str | None:
        return self.meta.get("persona") or None

    @property
    def paused(self) -> bool:
        return bool(self.meta.get("paused"))


_SEP = "\x1f"


def decode_entries(raw: Sequence[str]) -> list[tuple[str, StoredMessage]]:
    """(stored entry, message) for the entries this version can read; the others are left alone."""
    decoded = []
    for item in raw:
        try:
            decoded.append((item, decode(item)))
        except ValueError:
            continue
    return decoded


def own_entries(decoded: Sequence[tuple[str, StoredMessage]], user_id: str) -> list[str]:
    """The stored entries that are ``user_id``'s messages or the bot's replies to them (same turn id)."""
    turns = {m.turn_id for _, m in decoded if m.author_id == user_id and m.turn_id}
    return [item for item, m in decoded if m.author_id == user_id or (m.turn_id and m.turn_id in turns)]


def decode(raw: str) -> StoredMessage:
    seq, _, body = raw.partition("|")
    role, tokens, ts, author_id, author_name, turn_id, text = body.split(_SEP, 6)
    return StoredMessage(int(seq), role, text, author_id, author_name, float(ts), int(tokens), turn_id)


Rider = Callable[[Any], None]
"""Queues a caller's commands on the memory's pipeline (redis-py's, or a ScriptingPipe on a cluster)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the final write did: the last seq, whether the fold lock was taken, whether ``also`` ran."""

    last_seq: int
    fold: bool
    also_ok: bool


def _store_error(exc: RedisError) -> StoreError:
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return StoreUnavailable(f"Redis unreachable: {type(exc).__name__}")
    return StoreError(f"Redis error: {type(exc).__name__}: {exc}")


class RedisMemory:
    """Conversation memory on a redis-py asyncio client (which the caller owns)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        *,
        max_messages: int,
        ttl_seconds: int,
        deferred: DeferredWrites | None = None,
    ) -> None:
        self._r = client
        self._keys = keys
        self._max = max_messages
        self._ttl = ttl_seconds
        # EVALSHA inside our own pipeline: redis-py's Script objects add a SCRIPT EXISTS round trip per
        # pipeline, which would break the one-write-per-turn budget. NOSCRIPT (after a Redis restart)
        # loads the script and retries once.
        self._append_sha = hashlib.sha1(_APPEND.encode()).hexdigest()  # noqa: S324 - Redis's script id
        self._fenced_sha = hashlib.sha1(_APPEND_FENCED.encode()).hexdigest()  # noqa: S324 - as above
        self._save_summary = client.register_script(_SAVE_SUMMARY)
        self._cluster = isinstance(client, RedisCluster)  # REDIS_URL=redis+cluster://... (core/ops/redisconn)
        # Cluster: the final write's riders keyed on other nodes go here (None: they ride on the write).
        self._later = deferred if self._cluster else None

    @property
    def keys(self) -> KeySpace:
        return self._keys

    def queue_read(self, pipe: Any, place: Place, tail: int) -> None:
        """Queue :meth:`load`'s read (tail and meta) on someone else's pipeline in the conversation's slot
        (the queue worker's take); :meth:`read_from` makes its two results a state."""
        pipe.lrange(self._keys.messages(place), -tail, -1)
        pipe.hgetall(self._keys.meta(place))

    @staticmethod
    def read_from(results: Sequence[Any]) -> ConversationState | None:
        """The state from :meth:`queue_read`'s results (None when either failed: the turn's load reads)."""
        if len(results) != 2 or any(isinstance(r, Exception) for r in results):
            return None
        return ConversationState(messages=tuple(decode(m) for m in results[0]), meta=results[1])

    async def load(
        self,
        place: Place,
        *,
        tail: int,
        dedupe_key: str | None = None,
        also: Rider | None = None,
        read: ConversationState | None = None,
    ) -> ConversationState:
        """The conversation's tail and meta (and the dedupe check) in one round trip, with ``also``'s
        commands riding along; their results are in ``state.also`` (None when any of them failed: their
        owner then does its own round trip). Given the state already ``read`` with the lock (and no dedupe
        to do), nothing is sent: ``also``'s owner then does its own round trip."""
        if read is not None and not dedupe_key:
            return read
        results, riders = await self._read(place, tail, dedupe_key, also)
        duplicate = False
        if dedupe_key:
            seen = results.pop(0)
            if isinstance(seen, RedisError):
                raise _store_error(seen)
            duplicate = seen is None
        if any(isinstance(r, RedisConnectionError | RedisTimeoutError) for r in results):
            # The connection dropped under the reads (in a Cluster failover redis-py drops every node's
            # connections, commands in flight on healthy nodes too): read again, alone, rather than answer
            # the turn without memory. Only the reads: the dedupe check ran (its answer is above), and the
            # riders' owner sends its own commands again if any of them failed (``state.also``).
            results, _none = await self._read(place, tail, None, None)
        failed = next((r for r in results if isinstance(r, RedisError)), None)
        if failed is not None:
            raise _store_error(failed)
        raw_messages, meta = results
        return ConversationState(
            messages=tuple(decode(m) for m in raw_messages),
            meta=meta,
            duplicate=duplicate,
            also=None if any(isinstance(r, Exception) for r in riders) else riders,
        )

    async def _read(
        self, place: Place, tail: int, dedupe_key: str | None, also: Rider | None
    ) -> tuple[list[Any], list[Any]]:
        """One round trip: the dedupe check (if any), the tail and the meta, then ``also``'s riders; each
        result in place (an error too: a rider's failure is its owner's to handle, not the memory's)."""
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                if dedupe_key:
                    pipe.set(dedupe_key, "1", nx=True, ex=3600)
                pipe.lrange(self._keys.messages(place), -tail, -1)
                pipe.hgetall(self._keys.meta(place))
                own = len(pipe)
                if also is not None:
                    also(pipe)
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            raise _store_error(exc) from exc
        return results[:own], results[own:]

    async def record(
        self,
        place: Place,
        messages: Sequence[NewMessage],
        *,
        user_id: str = "",
        fold_lock_seconds: int = 0,
        fence: Fence | None = None,
        also: Rider | None = None,
    ) -> Recorded:
        """Append messages in one round trip, ``also``'s commands riding along. Behind a ``fence`` (the
        conversation lock's lease) the append happens only while the lease holds: :class:`LeaseLost`
        otherwise; a fence for another conversation is a ValueError. ``also`` failing (e.g. NOSCRIPT) does
        not fail the write: ``also_ok`` says so, and its owner sends its commands itself."""
        conv_key = self._keys.conversation(place)
        if fence is not None and fence.conversation != conv_key:
            # A lease on another conversation guards nothing here: writing unfenced would hide the bug.
            raise ValueError(f"a fence for {fence.conversation!r} cannot guard a write to {conv_key!r}")
        if fence is None:
            script: tuple[Any, ...] = (
                self._append_sha,
                3,
                self._keys.messages(place),
                self._keys.meta(place),
                self._keys.authors(place),
                self._max,
                self._ttl,
            )
        else:
            script = (
                self._fenced_sha,
                5,
                self._keys.messages(place),
                self._keys.meta(place),
                fence.lock_key,
                fence.inbox_key or fence.lock_key,
                self._keys.authors(place),
                self._max,
                self._ttl,
                fence.token,
                fence.inbox_item,
            )
        encoded = [m.encode() for m in messages]
        try:
            async with self._r.pipeline(transaction=False) as raw:
                # redis-py refuses pipe.evalsha in a cluster pipeline; ScriptingPipe sends it as a raw
                # EVALSHA, routed by its first key: one round trip per node touched.
                pipe: Any = ScriptingPipe(raw) if self._cluster else raw
                later = self._later
                split: Any = pipe
                if later is not None:  # what lives on other nodes waits (core/ops/deferred.py)
                    split = SlotSplit(pipe, self._r.keyslot(conv_key), self._r.keyslot, later)  # type: ignore[attr-defined]
                pipe.evalsha(*script, *encoded)
                if user_id:
                    index = self._keys.user_conversations(place.platform, user_id)
                    split.sadd(index, conv_key)
                    split.expire(index, self._ttl)
                fold_at = len(pipe)
                if fold_lock_seconds:
                    pipe.set(self._keys.fold_lock(place), "1", nx=True, ex=fold_lock_seconds)
                own = len(pipe)
                # What earlier turns deferred for this node goes along: no round trip of its own.
                room = ROOM - sum(len(m) for m in encoded)  # the write stays one read for the server
                earlier = [] if later is None else later.take_for(later.node_of(conv_key), room)
                for name, args, kwargs in earlier:
                    getattr(pipe, name)(*args, **kwargs)
                first_rider = len(pipe)
                if also is not None:
                    also(split)
                everything = await raw.execute(raise_on_error=False)
                results, riders = everything[:own], everything[first_rider:]
                if later is not None and earlier:
                    later.settle(earlier, everything[own:first_rider])
            # Errors come back in place, so that nothing that did run is run twice: only an append Redis
            # refused for a missing script (after a Redis restart) is sent again, once the script is loaded.
            if isinstance(results[0], NoScriptError):
                results[0] = await self._append_alone(script, encoded)
            failed = next((r for r in results if isinstance(r, RedisError)), None)
            if failed is not None:
                raise failed
        except NoScriptError:
            raise StoreError("Redis refused the append script of the final write") from None
        except RedisError as exc:
            raise _store_error(exc) from exc
        if int(results[0]) < 0:
            raise LeaseLost("the conversation lock's lease was lost before the final write")
        fold = bool(results[fold_at]) if fold_lock_seconds else False
        return Recorded(int(results[0]), fold, not any(isinstance(r, Exception) for r in riders))

    async def _append_alone(self, script: tuple[Any, ...], encoded: list[str]) -> Any:
        try:
            return await self._r.evalsha(*script, *encoded)
        except NoScriptError:
            await self.load_scripts()
            return await self._r.evalsha(*script, *encoded)

    async def load_scripts(self) -> None:
        """Load the append scripts (at start-up, and again if Redis lost them)."""
        try:
            await self._r.script_load(_APPEND)
            await self._r.script_load(_APPEND_FENCED)
        except RedisError as exc:
            raise _store_error(exc) from exc

    async def set_meta(self, place: Place, values: Mapping[str, str]) -> None:
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hset(self._keys.meta(place), mapping=dict(values))  # type: ignore[arg-type]
                pipe.expire(self._keys.meta(place), self._ttl)
                await pipe.execute()
        except RedisError as exc:
            raise _store_error(exc) from exc

    async def delete_meta(self, place: Place, *fields: str) -> None:
        try:
            await self._r.hdel(self._keys.meta(place), *fields)
        except RedisError as exc:
            raise _store_error(exc) from exc

    async def reset(self, place: Place, *, user_id: str | None = None) -> Reset:
        """Forget one conversation's state (messages, summary, last story), never its settings
        (:data:`SETTINGS`). With ``user_id`` and someone else's messages in the conversation, only that
        user's messages and the replies to them go: one member must not wipe a shared channel's context."""
        keys = [
            self._keys.messages(place),
            self._keys.meta(place),
            self._keys.fold_lock(place),
            self._keys.authors(place),
        ]
        try:
            if user_id is not None:
                async with self._r.pipeline(transaction=False) as pipe:
                    pipe.smembers(keys[3])
                    pipe.lrange(keys[0], 0, -1)
                    authors, raw = await pipe.execute()
                if {str(a) for a in authors} - {user_id}:
                    doomed = own_entries(decode_entries([str(r) for r in raw]), user_id)
                    removed = await self._r.eval(_REMOVE_OWN, 2, keys[0], keys[3], user_id, *doomed)
                    return Reset(whole=False, removed=int(removed))
            await self._r.eval(_RESET, 4, *keys)
        except RedisError as exc:
            raise _store_error(exc) from exc
        return Reset(whole=True)

    async def between(
        self, place: Place, after_seq: int, before_seq: int, last_seq: int
    ) -> list[StoredMessage]:
        """Messages with ``after_seq < seq < before_seq``, read by index from the list's tail."""
        if before_seq - after_seq <= 1:
            return []
        start = -(last_seq - after_seq)
        stop = -(last_seq - before_seq + 2)
        try:
            raw: list[str] = await self._r.lrange(self._keys.messages(place), start, stop)  # type: ignore[assignment]
        except RedisError as exc:
            raise _store_error(exc) from exc
        return [m for m in map(decode, raw) if after_seq < m.seq < before_seq]

    async def save_summary(self, place: Place, text: str, upto: int, expected_upto: int) -> bool:
        """Store a new summary unless another replica already moved it on."""
        try:
            done = await self._save_summary(keys=[self._keys.meta(place)], args=[text, upto, expected_upto])
            await self._r.delete(self._keys.fold_lock(place))
        except RedisError as exc:
            raise _store_error(exc) from exc
        return bool(done)

    async def flush(self) -> None:
        """Send the riders still deferred (cluster) now rather than at the next second."""
        if self._later is not None:
            await self._later.flush()

    async def aclose(self) -> None:
        """The client belongs to the runtime; riders still deferred (cluster) are sent now."""
        if self._later is not None:
            await self._later.aclose()
