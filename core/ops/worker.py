"""The queue worker: takes signals, drains each conversation's inbox in order under its lock.

For each signal (new, or claimed from a consumer that went quiet):

1. Lock the conversation and read its inbox head (one script). A new signal whose conversation a worker
   already holds is acknowledged at once: that holder drains the whole inbox and looks again before it
   unlocks, so the item will be answered. A claimed signal waits up to two leases for the lock (its holder
   may have died; its lease then runs out).
2. While the inbox has items: run the engine on the head with the lease's :class:`~core.memory.Fence`, hand
   the reply stream to the platform's Delivery. The final memory write checks the lease and pops the head in
   one script (a fenced write); then one more script retires the head (for turns that wrote nothing) and
   returns the next item, or, with the inbox empty, unlocks and acknowledges the signal in the same step
   (on Redis Cluster the acknowledgement rides on the worker's next read, and step 1 carries the first
   turn's memory read: core/ops/queue.py).
   A lease lost midway stops the drain.

While it works, the worker sends a heartbeat every ``locks.heartbeat`` seconds (3 s by default): it renews the
lease and re-claims its signal to itself (``XCLAIM ... JUSTID``, which resets the entry's idle time), so
nobody claims a turn whose owner lives, however slow the turn. If the worker dies, the heartbeats stop:
another worker's claim loop takes the signal with XAUTOCLAIM once it is ``claim_idle`` seconds idle (10 s by
default; by then the dead owner's lease, renewed at the same moments, has run out too) and answers the item
still at the inbox head. The loop does not poll: it reads the pending entries' idle times (XPENDING) and
sleeps until the first one can be claimed, or ``claim_idle`` when none is pending (one command per
``claim_idle`` at rest). A late writer (an owner that
stalled past its lease) is kept out by the fenced final write. On shutdown a worker stops reading, lets
running turns finish for ``grace`` seconds, then cancels them and hands their conversations back (unlock,
fresh signal): the unanswered item is still at the inbox head, nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from dataclasses import replace
from typing import Any

import structlog

from core.engine import Engine
from core.errors import ConfigError, StoreError, StoreUnavailable
from core.memory import ConversationState, Fence
from core.ops.delivery import Deliveries, run_turn
from core.ops.jobs import decode_job
from core.ops.lock import WORKER, ConversationLocks, Lease, holder_kind
from core.ops.metrics import Metrics
from core.ops.queue import Retired, Signal, TurnQueue
from core.tasks import TaskOwner, wait_event
from core.types import Place

log = structlog.get_logger("parley.worker")
PRUNE_EVERY = 300.0  # seconds between sweeps of dead consumers
HOUSEKEEPING_EVERY = 5.0  # seconds between stream trims (only after work was done)
CLAIM_EVERY = 1.0  # the next claim look while busy, after a failed look, or with many entries pending
CLAIM_MARGIN = 0.05  # seconds after an entry's claim time the look is due (timer slack)
PENDING_SCAN = 100  # pending entries one claim look reads the idle times of
HAND_BACK_WITHIN = 1.5  # seconds a cancelled turn may spend handing its conversation back
CONSUMER_RETENTION = 3600.0  # a consumer idle this long with nothing pending is a process that is gone


async def drain_within(owner: TaskOwner, seconds: float, hurry: asyncio.Event | None = None) -> None:
    """Wait up to ``seconds`` for ``owner``'s tasks to finish by themselves, or until ``hurry`` is set."""
    if not len(owner) or seconds <= 0:
        return
    waiters: set[asyncio.Task[Any]] = {asyncio.create_task(owner.drain(seconds))}
    if hurry is not None:
        waiters.add(asyncio.create_task(hurry.wait()))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.wait(waiters)


def consumer_name(configured: str | None = None) -> str:
    """A unique consumer name: the configured one (e.g. the pod name) or host-pid, plus a random tail."""
    base = configured or f"{socket.gethostname()}-{os.getpid()}"
    return f"{base}-{secrets.token_hex(3)}"


class TurnWorker:
    def __init__(
        self,
        *,
        engine: Engine,
        queue: TurnQueue,
        locks: ConversationLocks,
        deliveries: Deliveries,
        metrics: Metrics,
        concurrency: int = 16,
        claim_idle: float = 10.0,
        block: float = 4.0,  # seconds a read waits for new signals (under the Redis socket timeout, 5 s)
        name: str | None = None,
    ) -> None:
        self.engine = engine
        self.queue = queue
        self.locks = locks
        self.deliveries = deliveries
        self.metrics = metrics
        self.concurrency = concurrency
        self.claim_idle = claim_idle
        self.block = block
        self.name = consumer_name(name)
        self._turns = TaskOwner(f"worker:{self.name}")
        self._running = 0
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loops_done = asyncio.Event()
        self._log = log.bind(bot=engine.bot.name, consumer=self.name)
        self._reading: asyncio.Task[list[Signal]] | None = None  # the read waiting for signals, if any
        self._done_since_trim = 0  # signals handled (acknowledged or handed back) since the last trim
        # Cluster: an answered signal's XACK rides on the next read; sent alone before anyone could claim it.
        queue.ack_within = max(0.05, claim_idle - locks.heartbeat - 1.0)
        queue.on_version = engine.safety.admission.blocked_view.seen  # read with each XREADGROUP (cluster)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> int:
        return self._running

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Read and claim signals until :meth:`stop`. Redis outages are waited out, not fatal."""
        try:
            await self._wait_for_redis()
            self._log.info("worker_started", concurrency=self.concurrency)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read_loop(), name=f"{self.name}:read")
                tg.create_task(self._maintenance_loop(), name=f"{self.name}:claim")
        finally:
            self._loops_done.set()

    def stop(self) -> None:
        """Stop taking signals: a read waiting for new ones is cancelled, so the loops end at once (a quiet
        worker waits ``block`` seconds per read, not one: one Redis command per ``block`` at rest)."""
        self._stopping.set()
        self._slot_free.set()  # a loop waiting for a free slot looks at _stopping now
        if self._reading is not None:
            self._reading.cancel()

    async def shutdown(self, grace: float, hurry: asyncio.Event | None = None) -> None:
        """Stop, let running turns finish for ``grace`` seconds (less if ``hurry`` is set), then cancel
        them: each cancelled turn hands its conversation back to the queue."""
        self.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if not await wait_event(self._loops_done, self.block + 1.0):
            self._log.warning("worker_loops_slow_to_stop")
        running = self._running
        await drain_within(self._turns, max(0.0, deadline - loop.time()), hurry)
        handed_back = self._running
        await self._turns.aclose()
        with contextlib.suppress(TimeoutError):  # acknowledgements still waiting for a read (cluster)
            async with asyncio.timeout(HAND_BACK_WITHIN):
                await self.queue.aclose()
        self._log.info("worker_shutdown", running_at_stop=running, handed_back=handed_back)

    async def _wait_for_redis(self) -> None:
        delay = 0.1
        while not self.stopping:
            try:
                await self.queue.ensure_group()
                return
            except StoreError as exc:
                self._log.warning("worker_waiting_for_redis", error=str(exc))
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._stopping, seconds)

    # ------------------------------------------------------------------ taking signals

    async def _read_loop(self) -> None:
        delay = 0.1
        while not self.stopping:
            free = self.concurrency - self._running
            if free <= 0:
                self._slot_free.clear()
                await wait_event(self._slot_free, self.block)
                continue
            read = self.queue.read(self.name, count=free, block_ms=int(self.block * 1000))
            self._reading = asyncio.ensure_future(read)
            try:
                signals = await self._reading
                delay = 0.1
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if self.stopping and (me is None or not me.cancelling()):
                    return  # stop() cancelled the read, nobody cancelled this loop
                raise
            except StoreError as exc:
                self._log.warning("worker_read_failed", error=str(exc))
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            finally:
                self._reading = None
            self._start(signals)

    async def _maintenance_loop(self) -> None:
        """Claim dead owners' turns, trim, prune. The claim look is scheduled from the pending entries'
        idle times, not polled: an entry becomes claimable ``claim_idle`` after its last delivery or
        heartbeat, so a look that saw idle times ``i`` is next due at ``min(claim_idle - i)``, or
        ``claim_idle`` later when nothing was pending (an entry delivered after a look is at most
        ``claim_idle`` old at the next one). At rest that is one XPENDING per ``claim_idle`` per replica;
        a dead owner's turn is still claimed ``claim_idle`` + ~``CLAIM_MARGIN`` after its last heartbeat."""
        loop = asyncio.get_running_loop()
        next_look = loop.time()  # look at once: a predecessor's turns may be waiting
        next_prune = loop.time() + PRUNE_EVERY
        next_housekeeping = loop.time() + HOUSEKEEPING_EVERY
        while not self.stopping:
            due = min(next_look, next_prune)
            if self._done_since_trim:  # at rest there is nothing new to trim
                due = min(due, next_housekeeping)
            await self._sleep(max(0.0, due - loop.time()))
            if self.stopping:
                return
            try:
                if loop.time() >= next_look:
                    next_look = loop.time() + CLAIM_EVERY  # if the look fails: try again soon
                    next_look = loop.time() + await self._claim_look()
                if self._done_since_trim and loop.time() >= next_housekeeping:
                    next_housekeeping = loop.time() + HOUSEKEEPING_EVERY
                    self._done_since_trim = 0
                    await self.queue.trim()
                if loop.time() >= next_prune:
                    next_prune = loop.time() + PRUNE_EVERY
                    pruned = await self.queue.prune_consumers(CONSUMER_RETENTION)
                    if pruned:
                        self._log.info("worker_pruned_consumers", count=pruned)
            except StoreError as exc:
                self._log.warning("worker_maintenance_failed", error=str(exc))

    async def _claim_look(self) -> float:
        """Claim the pending entries that are ``claim_idle`` idle; return the seconds until the next look."""
        free = self.concurrency - self._running
        if free <= 0:
            return CLAIM_EVERY  # busy: look again once a slot may have freed
        pending = await self.queue.pending_idle(PENDING_SCAN)
        due = [entry for entry, idle in pending if idle >= self.claim_idle]
        waits = [self.claim_idle - idle for _entry, idle in pending if idle < self.claim_idle]
        if len(pending) >= PENDING_SCAN:
            waits.append(CLAIM_EVERY)  # more pending than one look sees: poll while that lasts
        if due:
            _cursor, signals = await self.queue.autoclaim(self.name, self.claim_idle, free, due[0])
            if signals:
                self.metrics.event("claimed", len(signals))
                self._log.info("worker_claimed", count=len(signals))
            self._start(signals)
            if len(signals) < len(due):  # no free slot for the rest (or another replica took them)
                waits.append(CLAIM_EVERY)
        return min(waits, default=self.claim_idle) + CLAIM_MARGIN

    def _start(self, signals: list[Signal]) -> None:
        """Each signal in its own owned task. Concurrency is a soft limit: a signal read is never dropped."""
        for signal in signals:
            self._running += 1
            self._turns.spawn(self._handle(signal), name=f"signal:{signal.entry_id}")

    # ------------------------------------------------------------------ one signal

    async def _handle(self, signal: Signal) -> None:
        try:
            await self._handle_signal(signal)
        except StoreError as exc:
            # Redis went away mid-way: leave the signal pending; it is claimed again once Redis is back.
            self._log.warning("worker_signal_failed", error=str(exc), entry=signal.entry_id)
        finally:
            self._running -= 1
            self._done_since_trim += 1
            self._slot_free.set()

    async def _handle_signal(self, signal: Signal) -> None:
        place = signal.place
        if place is None:
            self._log.error("worker_bad_signal", entry=signal.entry_id)
            await self.queue.ack(signal.entry_id)
            return
        if self.stopping:
            await self.queue.requeue(place, signal.entry_id, signal.turn_id)
            self.metrics.event("requeued")
            return
        lease, head, read = await self._take(place, signal)
        if lease is None:
            return
        try:
            async with self.locks.keep(lease, tick=lambda: self.queue.touch(self.name, signal.entry_id)):
                done = await self._drain(place, lease, head, signal, read)
        except asyncio.CancelledError:
            # Shutdown deadline: hand the conversation back. The unanswered item is still the inbox head.
            await self._hand_back(place, lease, signal)
            raise
        except BaseException:
            await self.locks.release(lease)
            raise
        if done:
            return  # unlocked and acknowledged with the last item's retirement
        if lease.lost:
            await self.queue.ack(signal.entry_id)  # the lease's new holder drains the inbox
            return
        # Stopping with items left: unlock and hand the conversation to another worker.
        if await self.queue.unlock(place, lease):
            await self.queue.requeue(place, signal.entry_id, signal.turn_id)
            self.metrics.event("requeued")
        else:
            await self.queue.ack(signal.entry_id)

    async def _take(
        self, place: Place, signal: Signal
    ) -> tuple[Lease | None, str | None, ConversationState | None]:
        """Lock the conversation and read its inbox head (on a cluster, and its memory for the first turn:
        one round trip instead of two). A new signal whose conversation another worker holds is acknowledged
        at once (that holder drains the whole inbox and re-checks it before unlocking); a claimed one waits
        up to two leases (its holder may have died: its lease then runs out)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (2 * self.locks.lease + 0.5 if signal.claimed else 0.0)
        delay = 0.02
        memory, tail = self.engine.memory, self.engine.bot.config.memory.window_max_messages
        while True:
            token = self.locks.token(WORKER)
            read: ConversationState | None = None
            if self.queue.cluster:
                lease, head, holder, results = await self.queue.take_and_read(
                    place, self.locks, token, lambda pipe: memory.queue_read(pipe, place, tail)
                )
                read = None if results is None else memory.read_from(results)
            else:
                lease, head, holder = await self.queue.take(place, self.locks, token)
            if lease is not None:
                return lease, head, read
            if loop.time() >= deadline:
                break
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.25)
        if holder_kind(holder) == WORKER:
            await self.queue.ack(signal.entry_id)
        # Else a direct turn holds it: leave the signal pending; it is claimed again after claim_idle.
        return None, None, None

    async def _retire(self, place: Place, item: str, lease: Lease, signal: Signal) -> Retired:
        """Retire an answered item, waiting out a Redis blip (a restart) for as long as the lease lasts: the
        reply is shown already, and an item left at the inbox head would be answered a second time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.locks.lease
        delay = 0.1
        while True:
            try:
                return await self.queue.retire(place, item, lease, signal.entry_id)
            except StoreUnavailable:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _hand_back(self, place: Place, lease: Lease, signal: Signal) -> None:
        try:
            # Bounded: with Redis down (or failing over) shutdown must not wait on retries.
            async with asyncio.timeout(HAND_BACK_WITHIN):
                await self.locks.release(lease)
                await self.queue.requeue(place, signal.entry_id, signal.turn_id)
            self.metrics.event("requeued")
            self._log.info("worker_handed_back", entry=signal.entry_id)
        except (StoreError, TimeoutError) as exc:  # the signal stays pending: claimed after claim_idle
            self._log.warning("worker_hand_back_failed", error=str(exc) or "timeout")

    async def _drain(
        self,
        place: Place,
        lease: Lease,
        item: str | None,
        signal: Signal,
        read: ConversationState | None = None,
    ) -> bool:
        """Answer the inbox's items in order while the lease holds. True when the inbox was emptied (the
        conversation is then unlocked and the signal acknowledged)."""
        inbox = self.queue.inbox(place)
        if item is None:  # nothing waits (another worker drained it): unlock and acknowledge in one step
            return (await self.queue.retire(place, "", lease, signal.entry_id)).done
        while not self.stopping and not lease.lost:
            try:
                job = decode_job(item, self.queue.signer)
                delivery = self.deliveries.get(job.route.platform)
            except (ValueError, ConfigError) as exc:
                self._log.error("worker_dropped_item", error=str(exc), conversation=lease.conversation)
                self.metrics.event("dropped")
            else:
                if signal.claimed:
                    job = replace(job, attempt=2)
                fence = Fence(lease.conversation, lease.key, lease.token, inbox, item, read)
                await run_turn(self.engine, delivery, job, self.metrics, fence=fence, guard=self.queue.guard)
            read = None  # read with the lock for the first item only
            retired = await self._retire(place, item, lease, signal)
            if retired.done:
                return True
            if not retired.held:
                lease.lost = True
                self._log.warning("lock_lease_lost", conversation=lease.conversation)
                return False
            assert retired.following is not None
            item = retired.following
        return False
