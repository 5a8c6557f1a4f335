"""The Delivery port, its registry, and the Dispatcher that adapters hand accepted turns to.

An adapter that accepted a platform event builds a :class:`~core.types.Turn` and a small
:class:`~core.ops.jobs.Route`, and calls ``await runtime.dispatcher.dispatch(turn, route)``. That returns
at once (no LLM work before a platform's ack):

- queue on (``PARLEY_QUEUE=true``, the default): the turn goes to the durable queue; a worker (in this
  process or another) answers it and shows the reply through the :class:`Delivery` registered for
  ``route.platform``. A full queue is answered with the persona's ``busy`` text through the same Delivery.
- queue off, or Redis unreachable: the turn runs here, in a task this dispatcher owns, and the reply goes to
  the same Delivery (with Redis down the engine answers the persona's memory_error, or without memory).
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from core.bot import BotSpec
from core.engine import Engine
from core.errors import ConfigError, StoreError
from core.memory import Fence
from core.ops.jobs import Job, Route
from core.ops.lock import ConversationLocks
from core.ops.metrics import Metrics
from core.ops.queue import SubmitStatus, TakenBack, TurnQueue
from core.ops.replay import JobGuard
from core.reply import ReplyFold
from core.safety.events import Decision
from core.tasks import TaskOwner
from core.types import ReplyDelta, ReplyDone, ReplyEvent, ReplyKind, ReplyResult, Turn

log = structlog.get_logger("parley.dispatch")


class Delivery(Protocol):
    """Shows one reply on a platform. ``deliver`` consumes ``events`` to the end (the engine writes memory
    before its last event); a platform failure is the Delivery's to log, it should not raise."""

    async def deliver(self, job: Job, events: AsyncIterator[ReplyEvent]) -> None: ...

    async def aclose(self) -> None: ...


class Deliveries:
    """Deliveries by platform name (``route.platform``)."""

    def __init__(self) -> None:
        self._by_platform: dict[str, Delivery] = {}

    def register(self, platform: str, delivery: Delivery) -> None:
        if platform in self._by_platform:  # the first one would never be closed
            raise ConfigError(f"a Delivery for {platform!r} is already registered")
        self._by_platform[platform] = delivery

    def get(self, platform: str) -> Delivery:
        try:
            return self._by_platform[platform]
        except KeyError:
            known = ", ".join(sorted(self._by_platform)) or "none"
            raise ConfigError(
                f"no Delivery registered for platform {platform!r} (registered: {known})"
            ) from None

    def __contains__(self, platform: str) -> bool:
        return platform in self._by_platform

    async def aclose(self) -> None:
        deliveries, self._by_platform = list(self._by_platform.values()), {}
        for delivery in deliveries:
            await delivery.aclose()


async def run_turn(
    engine: Engine,
    delivery: Delivery,
    job: Job,
    metrics: Metrics | None = None,
    *,
    fence: Fence | None = None,
    deduplicated: bool = True,
    guard: JobGuard | None = None,
) -> ReplyResult | None:
    """Answer ``job`` with the engine and show it through ``delivery``; always finish the engine's turn.

    ``fence`` is the conversation lock's lease the turn's final write must still hold. A queued turn was
    deduplicated at enqueue time (``deduplicated``): the engine sees it without its ``event_id``, so a
    worker that takes over a dead worker's turn is not refused as a duplicate. A queued turn runs only when
    ``guard`` admits it (fresh, and its nonce unseen: core/ops/replay.py); a refusal is audited, not shown.
    """
    if guard is not None and not await _admitted(engine, guard, job, metrics):
        return None
    turn = replace(job.turn, event_id="") if deduplicated else job.turn
    events = engine.reply(turn, fence=fence)
    fold = ReplyFold()
    watched = fold.watch(events)
    if metrics is not None:
        metrics.in_flight.labels(metrics.bot).inc()
    try:
        try:
            await delivery.deliver(job, watched)
        except Exception as exc:  # task boundary: a platform failure must not lose the turn's memory
            log.error(
                "delivery_failed",
                platform=job.route.platform,
                turn_id=turn.turn_id,
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )
            if metrics is not None:
                metrics.delivery_failures.labels(metrics.bot, job.route.platform).inc()
        async for _ in watched:  # whatever the delivery left: the engine records the turn at its end
            pass
    finally:
        await events.aclose()
        if metrics is not None:
            metrics.in_flight.labels(metrics.bot).dec()
        if guard is not None:
            await guard.done(job)
    return fold.result


async def _admitted(engine: Engine, guard: JobGuard, job: Job, metrics: Metrics | None) -> bool:
    try:
        refusal = await guard.admit(job)
    except StoreError as exc:  # fail closed: an item that cannot be checked is not run
        refusal = "job_unchecked"
        log.warning("job_check_failed", error=str(exc), turn_id=job.turn.turn_id)
    if not refusal:
        return True
    log.warning(
        "job_refused",
        reason=refusal,
        turn_id=job.turn.turn_id,
        age_s=round(time.time() - job.enqueued_at),
        attempt=job.attempt,
        platform=job.turn.place.platform,
        user=job.turn.author.id,
    )
    if metrics is not None:
        metrics.event(refusal)
    await engine.safety.events.record(
        job.turn, [Decision("queue", refusal, "refuse", "worker", job.nonce[:8])]
    )
    return False


async def one_reply(result: ReplyResult) -> AsyncIterator[ReplyEvent]:
    """A reply stream of one finished text (busy notices and the like)."""
    if result.text:
        yield ReplyDelta(result.text)
    yield ReplyDone(result)


class DispatchOutcome(enum.StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"
    BUSY = "busy"
    DIRECT = "direct"  # answered in this process (queue off)
    FALLBACK = "fallback"  # answered in this process because the queue was unreachable


@dataclass(frozen=True, slots=True)
class Dispatched:
    outcome: DispatchOutcome
    reason: str = ""


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        bot: BotSpec,
        deliveries: Deliveries,
        queue: TurnQueue | None,
        locks: ConversationLocks,
        metrics: Metrics,
        *,
        max_direct: int = 256,
    ) -> None:
        self.engine = engine
        self.bot = bot
        self.deliveries = deliveries
        self.queue = queue
        self.locks = locks
        self.metrics = metrics
        self.tasks = TaskOwner(f"dispatch:{bot.name}")
        # Turns answered in this process at once (queue off, or Redis down): past this, users hear "busy".
        self.max_direct = max_direct
        self._direct_running = 0

    async def dispatch(self, turn: Turn, route: Route | None = None) -> Dispatched:
        """Hand over an accepted turn; returns at once. :class:`ConfigError` if no Delivery can show it."""
        route = route or Route(turn.place.platform)
        delivery = self.deliveries.get(route.platform)
        job = Job(turn, route)
        if self.queue is None:
            return self._answer_here(delivery, job, DispatchOutcome.DIRECT)
        try:
            submitted = await self.queue.submit(job)
        except StoreError as exc:
            log.warning("queue_unavailable_answering_here", error=str(exc), turn_id=turn.turn_id)
            self.metrics.redis_unavailable.labels(self.metrics.bot, "queue").inc()
            # A turn the queue took back keeps its event claimed for it: answered without the event dedupe.
            claimed = isinstance(exc, TakenBack)
            return self._answer_here(delivery, job, DispatchOutcome.FALLBACK, str(exc), deduplicated=claimed)
        self.metrics.event(submitted.status.value)
        if submitted.status is SubmitStatus.DUPLICATE:
            return Dispatched(DispatchOutcome.DUPLICATE)
        if submitted.status is SubmitStatus.BUSY:
            return self._busy(delivery, job, submitted.reason)
        return Dispatched(DispatchOutcome.QUEUED)

    def _answer_here(
        self,
        delivery: Delivery,
        job: Job,
        outcome: DispatchOutcome,
        reason: str = "",
        *,
        deduplicated: bool = False,
    ) -> Dispatched:
        """Answer in this process (no queue, or no Redis), within ``max_direct`` turns at once."""
        if self._direct_running >= self.max_direct:
            self.metrics.event("busy")
            return self._busy(delivery, job, "direct_full")
        self.metrics.event(outcome.value)
        self._direct_running += 1
        self._spawn(self._direct(delivery, job, deduplicated), job.turn)
        return Dispatched(outcome, reason)

    def _busy(self, delivery: Delivery, job: Job, reason: str) -> Dispatched:
        turn = job.turn
        persona = self.bot.persona(None)
        busy = ReplyResult(
            turn.turn_id, ReplyKind.REFUSAL, persona.busy, persona=persona.name, meta={"reason": reason}
        )
        log.warning("queue_busy", reason=reason, turn_id=turn.turn_id)
        self._spawn(self._notify(delivery, job, busy), turn)
        return Dispatched(DispatchOutcome.BUSY, reason)

    def _spawn(self, work: Coroutine[Any, Any, None], turn: Turn) -> None:
        self.tasks.spawn(work, name=f"turn:{turn.turn_id}")

    async def _direct(self, delivery: Delivery, job: Job, deduplicated: bool = False) -> None:
        # Not queued, so (unless the queue claimed its event and took it back) not deduplicated yet: the
        # engine dedupes on the event id itself. The lock keeps replicas answering one conversation in order.
        try:
            async with self.locks.hold(job.turn.place) as fence:
                await run_turn(
                    self.engine, delivery, job, self.metrics, fence=fence, deduplicated=deduplicated
                )
        finally:
            self._direct_running -= 1

    async def _notify(self, delivery: Delivery, job: Job, result: ReplyResult) -> None:
        try:
            await delivery.deliver(job, one_reply(result))
        except Exception as exc:  # task boundary
            log.error("delivery_failed", platform=job.route.platform, error=type(exc).__name__)

    async def aclose(self, grace: float = 0.0) -> None:
        """Let direct turns finish for ``grace`` seconds, then cancel them."""
        await self.tasks.aclose(grace)
