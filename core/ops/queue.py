"""The durable turn queue: per-conversation inboxes plus one Redis Stream of signals with a consumer group.

Keys (bot ``b``, conversation ``c``)::

    parley:b:queue              stream of signals {p: place, t: turn id}; consumer group "workers"
    parley:b:{c}:inbox          list of queue items (encoded Job), oldest first; a worker reads the head
    parley:b:{c}:dedupe:<event> the engine's event dedupe key, now set at enqueue time (value: the turn's id)

Round trips of one queued turn (counted by the server in ``make bench``): submit 1 (one script: dedupe,
bounds, inbox push, signal), XREADGROUP 1 (shared by the signals it returns), lock + inbox head 1, the
engine's read 1 and fenced write 1 (which pops the head), then retire 1 (next head, or unlock + XACK when the
inbox is empty): six. On Redis Cluster the stream and an inbox live on different nodes, so submit is two
scripts there (dedupe + inbox in the conversation's slot, bound + signal in the stream's), the
acknowledgement, which the retire script cannot send, waits for the worker's next XREADGROUP (same node,
one pipeline; see :meth:`TurnQueue.defer_ack`), and the lock's take carries the engine's read
(:meth:`TurnQueue.take_and_read`): six there too. The bounds are ``max_len`` stream entries not yet trimmed
and ``max_per_conversation`` items in one inbox. Workers trim acknowledged entries (``XTRIM MINID`` below the
oldest pending one), so the stream holds only work that is waiting or in progress, never a turn that nobody
answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from core.errors import StoreError, StoreUnavailable
from core.keys import KeySpace
from core.ops.jobs import Job, JobSigner, decode_place, encode_job, encode_place
from core.ops.lock import WORKER, ConversationLocks, Lease, lock_key
from core.ops.recorder import ScriptingPipe
from core.ops.replay import JobGuard
from core.types import Place

GROUP = "workers"
DEDUPE_SECONDS = 3600

# The dedupe key (KEYS[1] below, absent for a turn without an event id) holds the id of the turn that
# claimed the event, and the refusal it got (``<turn id>:<refusal>``) if it was refused: a submission sent
# again by the client after its reply was lost (a connection dropped under it in a failover) is told what its
# first send did, not "duplicate" (which would leave the pushed item with no signal: nobody would take it).
_SEEN = """
local function seen(key, turn_id)
  local value = redis.call('GET', key)
  if value == turn_id then return 'queued' end
  for _, refused in ipairs({'queue_full', 'conversation_full'}) do
    if value == turn_id .. ':' .. refused then return refused end
  end
  return 'duplicate'
end
"""

# Enqueue one turn: dedupe (KEYS[1], may be absent), bound the stream (KEYS[2]) and the inbox (KEYS[3]),
# push the item, signal. Returns "queued", "duplicate", "queue_full" or "conversation_full".
_SUBMIT = (
    _SEEN
    + """
local n = #KEYS
if n == 3 and not redis.call('SET', KEYS[1], ARGV[7], 'NX', 'EX', ARGV[1]) then
  return seen(KEYS[1], ARGV[7])
end
local stream, inbox = KEYS[n - 1], KEYS[n]
local refused = nil
if redis.call('XLEN', stream) >= tonumber(ARGV[2]) then refused = 'queue_full'
elseif redis.call('LLEN', inbox) >= tonumber(ARGV[3]) then refused = 'conversation_full' end
if refused then
  if n == 3 then redis.call('SET', KEYS[1], ARGV[7] .. ':' .. refused, 'EX', ARGV[1]) end
  return refused
end
redis.call('RPUSH', inbox, ARGV[5])
redis.call('EXPIRE', inbox, ARGV[4])
if ARGV[6] ~= '' then redis.call('XADD', stream, '*', 'p', ARGV[6], 't', ARGV[7]) end
return 'queued'
"""
)

# Cluster, step 1 (the conversation's slot): dedupe (KEYS[1], may be absent), bound the inbox, push.
_SUBMIT_INBOX = (
    _SEEN
    + """
local n = #KEYS
if n == 2 and not redis.call('SET', KEYS[1], ARGV[5], 'NX', 'EX', ARGV[1]) then
  return seen(KEYS[1], ARGV[5])
end
local inbox = KEYS[n]
if redis.call('LLEN', inbox) >= tonumber(ARGV[2]) then
  if n == 2 then redis.call('SET', KEYS[1], ARGV[5] .. ':conversation_full', 'EX', ARGV[1]) end
  return 'conversation_full'
end
redis.call('RPUSH', inbox, ARGV[4])
redis.call('EXPIRE', inbox, ARGV[3])
return 'queued'
"""
)

# Cluster, step 2 (the stream's slot): bound the stream, signal.
_SIGNAL = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 'queue_full' end
redis.call('XADD', KEYS[1], '*', 'p', ARGV[2], 't', ARGV[3])
return 'queued'
"""

# Cluster, when the signal cannot be sent (the stream's node stays unreachable): take the item ARGV[1] back
# out of the inbox (KEYS[n]) so that the caller answers the turn itself, unless a worker holds the
# conversation's lock (KEYS[n - 1]: it drains the whole inbox, this item too). The dedupe key (KEYS[1], may be
# absent) is marked ``<turn id ARGV[2]>:taken_back``: the event stays claimed for this turn, and this call
# sent again after its reply was lost knows what its first send did. 1 = taken back, 0 = a worker answers it.
_TAKE_BACK = """
local n = #KEYS
local lock, inbox = KEYS[n - 1], KEYS[n]
local mark = ARGV[2] .. ':taken_back'
if n == 3 and redis.call('GET', KEYS[1]) == mark then return 1 end
local holder = redis.call('GET', lock)
if holder and string.sub(holder, 1, #ARGV[4]) == ARGV[4] then return 0 end
if redis.call('LREM', inbox, -1, ARGV[1]) == 0 then return 0 end
if n == 3 then redis.call('SET', KEYS[1], mark, 'EX', ARGV[3]) end
return 1
"""

# Take the conversation's lock (KEYS[1]) and read its inbox head (KEYS[2]) in one step.
# {"", head or false} = taken; {holder} = someone else holds it. A lock that already holds this token is
# this take's own, sent again after its reply was lost (a connection dropped under it in a failover): taken.
_TAKE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {holder} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'', redis.call('LINDEX', KEYS[2], 0)}
"""

# After a turn: pop the head if it is still this item, as long as the lease is ours. If another item waits,
# return it (the holder keeps the lock and answers it); else unlock and, when KEYS[3] (the stream) is given,
# acknowledge the signal ARGV[3]. {0} = lease lost, {1, next head} = go on, {2} = unlocked, inbox empty.
_RETIRE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
if redis.call('LINDEX', KEYS[2], 0) == ARGV[2] then redis.call('LPOP', KEYS[2]) end
local following = redis.call('LINDEX', KEYS[2], 0)
if following then return {1, following} end
redis.call('DEL', KEYS[1])
if KEYS[3] then redis.call('XACK', KEYS[3], ARGV[4], ARGV[3]) end
return {2}
"""

# Release the lock if it is still ours, and say how many items wait in the inbox (one round trip).
_RELEASE_AND_COUNT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return redis.call('LLEN', KEYS[2])
"""


def _error(exc: RedisError) -> StoreError:
    if isinstance(exc, ResponseError):
        return StoreError(f"Redis error: {exc}")
    return StoreUnavailable(f"Redis unreachable: {type(exc).__name__}")


class TakenBack(StoreUnavailable):
    """The turn was pushed but its signal could not be sent (the stream's node stayed unreachable), so it was
    taken back out of its inbox: nobody will answer it from the queue. Its event stays claimed for it (answer
    it here without the engine's event dedupe)."""


class SubmitStatus(enum.StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"  # the same platform event was accepted before (a retry, or another replica)
    BUSY = "busy"  # the queue (or this conversation's inbox) is full: tell the user to try again


@dataclass(frozen=True, slots=True)
class Submitted:
    status: SubmitStatus
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Retired:
    """After a turn: the lock is still ``held`` with a ``following`` item to answer, or the inbox was
    empty and the conversation is unlocked and its signal acknowledged (``done``), or neither: the lease
    was lost."""

    held: bool
    following: str | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class Signal:
    entry_id: str
    place: Place | None  # None: a malformed entry (acknowledged and dropped)
    turn_id: str = ""
    claimed: bool = False  # taken over from another consumer (it died, stalled, or handed it back)


def _signal(entry_id: str, fields: Any, claimed: bool) -> Signal:
    if not fields:
        return Signal(entry_id, None, claimed=claimed)
    try:
        place = decode_place(fields.get("p", ""))
    except ValueError:
        return Signal(entry_id, None, claimed=claimed)
    return Signal(entry_id, place, str(fields.get("t", "")), claimed)


class TurnQueue:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        *,
        max_len: int = 10_000,
        max_per_conversation: int = 100,
        inbox_ttl: int = 86_400,
        signer: JobSigner | None = None,
    ) -> None:
        self._r = client
        self._keys = keys
        self.max_len = max_len
        self.max_per_conversation = max_per_conversation
        self._inbox_ttl = inbox_ttl
        self.signer = signer or JobSigner(())  # queued turns carry is_admin: workers trust only signed ones
        # ... and run each signed item once, while fresh (core/ops/replay.py)
        self.guard = JobGuard(
            client, keys, max_age_seconds=self.signer.max_age_seconds, enabled=self.signer.enabled
        )
        self.stream = keys.scoped("queue")
        self._submit = client.register_script(_SUBMIT)
        self._take = client.register_script(_TAKE)
        self._retire = client.register_script(_RETIRE)
        self._cluster = isinstance(client, RedisCluster)
        self._release_and_count = client.register_script(_RELEASE_AND_COUNT)
        self._submit_inbox = client.register_script(_SUBMIT_INBOX)
        self._signal = client.register_script(_SIGNAL)
        self._take_back = client.register_script(_TAKE_BACK)
        # Cluster: answered signals whose XACK rides on the next read (same node); sent alone if no read
        # comes within ``ack_within`` seconds (the worker sets it under its claim idle).
        self._acks: list[str] = []
        # Cluster: told the blocked sets' version (core/safety/views.py) as read with each XREADGROUP.
        self.on_version: Callable[[str | None], None] | None = None
        self.ack_within = 2.0
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_flush: asyncio.Task[None] | None = None

    @property
    def cluster(self) -> bool:
        return self._cluster

    def inbox(self, place: Place) -> str:
        return self._keys.conversation(place) + ":inbox"

    # ------------------------------------------------------------------ submitting (adapters)

    async def submit(self, job: Job) -> Submitted:
        """Enqueue one turn (one round trip). Raises :class:`StoreError` when Redis cannot take it."""
        turn = job.turn
        keys = [self.inbox(turn.place)]
        if turn.event_id:
            keys.insert(0, self._keys.dedupe(turn.place, turn.event_id))
        place, item = encode_place(turn.place), encode_job(job, self.signer)
        bounds: list[str | int] = [
            DEDUPE_SECONDS,
            self.max_len,
            self.max_per_conversation,
            self._inbox_ttl,
            item,
        ]
        try:
            if self._cluster:
                # The stream and the inbox live in different slots: check and push in the inbox's slot (the
                # dedupe key goes first, alone), then signal (after the item, so a worker finds it).
                status = await self._submit_on_cluster(keys, bounds, turn.place, place, turn.turn_id)
            else:
                keys.insert(len(keys) - 1, self.stream)
                status = str(await self._submit(keys=keys, args=[*bounds, place, turn.turn_id]))
        except RedisError as exc:
            raise _error(exc) from exc
        if status == "duplicate":
            return Submitted(SubmitStatus.DUPLICATE)
        if status in ("queue_full", "conversation_full"):
            return Submitted(SubmitStatus.BUSY, status)
        return Submitted(SubmitStatus.QUEUED)

    async def _submit_on_cluster(
        self, keys: list[str], bounds: list[str | int], where: Place, place: str, turn_id: str
    ) -> str:
        """Two scripts: dedupe + push in the conversation's slot, then bound + signal in the stream's (after
        the item, so a worker finds it). A full stream takes the item back out (rare: two more calls), and so
        does a signal that cannot be sent (:class:`TakenBack`: the caller answers the turn itself)."""
        item = str(bounds[-1])
        status = str(
            await self._submit_inbox(
                keys=keys, args=[DEDUPE_SECONDS, self.max_per_conversation, self._inbox_ttl, item, turn_id]
            )
        )
        if status != "queued":
            return status
        try:
            status = str(await self._signal(keys=[self.stream], args=[self.max_len, place, turn_id]))
        except RedisError as exc:
            # Left in the inbox with no signal, the item would wait for the conversation's next turn (and the
            # caller's fallback would find its event taken): take it back, unless a worker drains it anyway.
            back = [*keys[:-1], lock_key(self._keys, where), keys[-1]]
            args: list[str | int] = [item, turn_id, DEDUPE_SECONDS, WORKER + ":"]
            if not int(await self._take_back(keys=back, args=args)):
                return "queued"
            raise TakenBack(f"Redis unreachable: {type(exc).__name__}") from exc
        if status != "queued":
            await self._r.lrem(keys[-1], -1, item)
            if len(keys) == 2:
                await self._r.delete(keys[0])  # the event may be sent again once there is room
        return status

    # ------------------------------------------------------------------ consuming (workers)

    async def ensure_group(self) -> None:
        try:
            await self._r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise _error(exc) from exc
        except RedisError as exc:
            raise _error(exc) from exc

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Signal]:
        """New signals for ``consumer`` (waits up to ``block_ms``). On a cluster, the acknowledgements
        waiting (:meth:`defer_ack`) go first in the same pipeline: the stream's node, one round trip."""
        acks, self._acks = self._acks, []
        try:
            if self._cluster:  # and the blocked sets' version after it (core/safety/views.py)
                async with self._r.pipeline(transaction=False) as pipe:
                    if acks:
                        pipe.xack(self.stream, GROUP, *acks)
                    pipe.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms)
                    pipe.get(self._keys.blocked_version())
                    results = await pipe.execute(raise_on_error=False)
                if acks and isinstance(results[0], RedisError):
                    self._acks[:0] = acks  # sent again with the next read
                acks = []  # sent, or put back above
                response, version = results[-2:]
                if isinstance(response, RedisError):
                    raise response
                if self.on_version is not None and not isinstance(version, RedisError):
                    self.on_version(None if version is None else str(version))
            else:
                response = await self._r.xreadgroup(
                    GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms
                )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # Redis lost the group (restarted without persistence): recreate
                await self.ensure_group()
                return []
            raise _error(exc) from exc
        except RedisError as exc:
            if acks and not isinstance(exc, ResponseError):
                self._acks[:0] = acks  # sent again with the next read (an XACK twice is harmless)
            raise _error(exc) from exc
        except asyncio.CancelledError:  # stop() cancels a waiting read: shutdown flushes what it carried
            self._acks[:0] = acks
            raise
        entries: list[Any] = []
        if isinstance(response, dict):
            for value in response.values():
                entries.extend(value[0] if value and isinstance(value[0], list) else value)
        else:
            for _stream, items in response or []:
                entries.extend(items)
        return [_signal(entry_id, fields, False) for entry_id, fields in entries]

    def defer_ack(self, entry_id: str) -> None:
        """Acknowledge ``entry_id`` with the next read (cluster). Safe to be late: an entry left pending is
        at worst claimed after ``claim_idle`` by a worker that finds its inbox empty (or answered) and
        acknowledges it. A timer sends it alone if no read comes first."""
        self._acks.append(entry_id)
        if self._ack_timer is None and self._ack_flush is None:
            loop = asyncio.get_running_loop()
            self._ack_timer = loop.call_later(self.ack_within, self._flush_later)

    def _flush_later(self) -> None:
        self._ack_timer = None
        if self._acks:
            self._ack_flush = asyncio.ensure_future(self._flush_quietly())

    async def _flush_quietly(self) -> None:
        try:
            await self.flush_acks()
        except StoreError:
            pass  # still waiting: the next read (or the next timer) sends them
        finally:
            self._ack_flush = None
            if self._acks and self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(self.ack_within, self._flush_later)

    async def flush_acks(self) -> None:
        """Send the acknowledgements waiting for a read now (a timer, shutdown)."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        acks, self._acks = self._acks, []
        if not acks:
            return
        try:
            await self._r.xack(self.stream, GROUP, *acks)
        except RedisError as exc:
            self._acks[:0] = acks
            raise _error(exc) from exc

    async def aclose(self) -> None:
        """Send what waits (bounded by the caller), stop the timer."""
        if self._ack_flush is not None:
            self._ack_flush.cancel()
            with contextlib.suppress(asyncio.CancelledError, StoreError):
                await self._ack_flush
        with contextlib.suppress(StoreError):
            await self.flush_acks()

    async def autoclaim(
        self, consumer: str, min_idle: float, count: int, cursor: str
    ) -> tuple[str, list[Signal]]:
        """Take over entries idle for ``min_idle`` seconds (their consumer died or stalled)."""
        try:
            response = await self._r.xautoclaim(
                self.stream, GROUP, consumer, int(min_idle * 1000), start_id=cursor, count=count
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self.ensure_group()
                return "0-0", []
            raise _error(exc) from exc
        except RedisError as exc:
            raise _error(exc) from exc
        next_cursor = str(response[0])
        signals = [_signal(entry_id, fields, True) for entry_id, fields in response[1]]
        return next_cursor, signals

    async def pending_idle(self, count: int) -> list[tuple[str, float]]:
        """(entry id, seconds since its last delivery or heartbeat) of the first ``count`` pending entries,
        oldest id first (XPENDING's extended form): when each becomes claimable, without claiming it."""
        try:
            rows: Any = await self._r.xpending_range(self.stream, GROUP, "-", "+", count)
        except ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc).lower():
                return []  # nothing was ever queued (or Redis lost it: the read loop recreates the group)
            raise _error(exc) from exc
        except RedisError as exc:
            raise _error(exc) from exc
        return [(str(row["message_id"]), int(row["time_since_delivered"]) / 1000) for row in rows or []]

    async def touch(self, consumer: str, entry_id: str) -> None:
        """Reset an entry's idle time (its worker is alive and still on it), so nobody claims it."""
        try:
            await self._r.xclaim(self.stream, GROUP, consumer, 0, [entry_id], justid=True)
        except RedisError as exc:
            raise _error(exc) from exc

    async def ack(self, entry_id: str) -> None:
        try:
            await self._r.xack(self.stream, GROUP, entry_id)
        except RedisError as exc:
            raise _error(exc) from exc

    async def requeue(self, place: Place, entry_id: str, turn_id: str = "") -> None:
        """Hand a conversation back: a fresh signal for it, and the old one acknowledged."""
        try:
            await self._r.xadd(self.stream, {"p": encode_place(place), "t": turn_id})
            await self._r.xack(self.stream, GROUP, entry_id)
        except RedisError as exc:
            raise _error(exc) from exc

    async def take(
        self, place: Place, locks: ConversationLocks, token: str
    ) -> tuple[Lease | None, str | None, str]:
        """Take the conversation's lock as ``token`` and read its inbox head in one round trip:
        ``(lease, head, "")``, or ``(None, None, holder)`` when someone else holds it."""
        key = locks.key(place)
        try:
            result: list[Any] = await self._take(keys=[key, self.inbox(place)], args=[token, locks.lease_ms])
        except RedisError as exc:
            raise _error(exc) from exc
        if result[0]:
            return None, None, str(result[0])
        head = result[1] if len(result) > 1 and result[1] else None
        return Lease(key, token, self._keys.conversation(place)), None if head is None else str(head), ""

    async def take_and_read(
        self, place: Place, locks: ConversationLocks, token: str, read: Callable[[Any], None]
    ) -> tuple[Lease | None, str | None, str, list[Any] | None]:
        """:meth:`take`, with ``read``'s commands (keys in the conversation's slot) after it in the same
        pipeline: one round trip. Their results come fourth when the lock was taken (they were read under
        it), else None."""
        key = locks.key(place)
        try:
            async with self._r.pipeline(transaction=False) as raw:
                pipe: Any = ScriptingPipe(raw) if self._cluster else raw
                pipe.evalsha(self._take.sha, 2, key, self.inbox(place), token, locks.lease_ms)
                read(pipe)
                results: list[Any] = list(await raw.execute(raise_on_error=False))
        except RedisError as exc:
            raise _error(exc) from exc
        taken = results[0]
        if isinstance(taken, RedisError):  # NOSCRIPT after a Redis restart: take() loads the script
            lease, head, holder = await self.take(place, locks, token)
            return lease, head, holder, None
        if taken[0]:
            return None, None, str(taken[0]), None
        head = taken[1] if len(taken) > 1 and taken[1] else None
        lease = Lease(key, token, self._keys.conversation(place))
        return lease, None if head is None else str(head), "", results[1:]

    async def retire(self, place: Place, item: str, lease: Lease, entry_id: str) -> Retired:
        """Pop ``item`` off the inbox head while ``lease`` holds, and return the next item; with nothing
        left, unlock and acknowledge the signal ``entry_id`` in the same step (on a cluster the stream lives
        elsewhere: the acknowledgement rides on the next read, :meth:`defer_ack`)."""
        keys = [lease.key, self.inbox(place)]
        if not self._cluster:
            keys.append(self.stream)
        try:
            result: list[Any] = await self._retire(keys=keys, args=[lease.token, item, entry_id, GROUP])
        except RedisError as exc:
            raise _error(exc) from exc
        if not result or not int(result[0]):
            return Retired(held=False)
        if int(result[0]) == 1:
            return Retired(held=True, following=str(result[1]))
        if self._cluster:
            self.defer_ack(entry_id)
        return Retired(held=False, done=True)

    async def unlock(self, place: Place, lease: Lease) -> int:
        """Release ``lease`` (if still ours) and return how many items wait in the conversation's inbox."""
        try:
            return int(await self._release_and_count(keys=[lease.key, self.inbox(place)], args=[lease.token]))
        except RedisError as exc:
            raise _error(exc) from exc

    # ------------------------------------------------------------------ housekeeping

    async def trim(self) -> None:
        """Drop acknowledged entries: everything below the oldest pending one (or the last delivered)."""
        try:
            pending: Any = await self._r.xpending(self.stream, GROUP)
            groups: Any = await self._r.xinfo_groups(self.stream)
            last = next((g["last-delivered-id"] for g in groups if g["name"] == GROUP), None)
            if last is None:
                return
            safe = pending["min"] if pending and pending.get("pending") else last
            if safe and safe != "0-0":
                await self._r.xtrim(self.stream, minid=safe, approximate=False)
        except ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc).lower():
                return
            raise _error(exc) from exc
        except RedisError as exc:
            raise _error(exc) from exc

    async def prune_consumers(self, idle: float) -> int:
        """Forget consumers (dead processes) with nothing pending and no activity for ``idle`` seconds."""
        try:
            consumers: Any = await self._r.xinfo_consumers(self.stream, GROUP)
            gone = [c["name"] for c in consumers if not c.get("pending") and c.get("idle", 0) > idle * 1000]
            for name in gone:
                await self._r.xgroup_delconsumer(self.stream, GROUP, name)
        except ResponseError:
            return 0  # no stream or group yet
        except RedisError as exc:
            raise _error(exc) from exc
        return len(gone)

    async def stats(self) -> tuple[int, int]:
        """(entries in the stream, entries pending) for the metrics."""
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.xlen(self.stream)
                pipe.xpending(self.stream, GROUP)
                depth, pending = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            raise _error(exc) from exc
        depth_n = int(depth) if isinstance(depth, int) else 0
        pending_n = int(pending.get("pending", 0)) if isinstance(pending, dict) else 0
        return depth_n, pending_n
