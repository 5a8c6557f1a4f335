"""The one delivery path: every platform shows a reply's parts in the same steps, in the same order.

:meth:`ReplyDelivery.deliver` is the only ``deliver()``. A platform fills in two things, finding its target
and streaming the text; every other step has a plain-text default built on the text step, so a new platform
works with those two alone. Slack, Discord and the terminal override the steps they do natively (see the table
in ``docs/architecture.md``). The model is Rasa's ``OutputChannel.send_response`` (each part of a response to
its own method, with text defaults).

    target    where the reply goes (the platform's own)                    required
    text      stream the text: post, paced edits, overflow                 required
    retire    controls that no longer apply (a story's old vote buttons)   default: nothing to retire
    files     the reply's files                                            default: a line naming each
    choices   a story part's choices                                       default: "/story <n>" lines
    confirm   a proposed tool call's yes / no                              default: "/tool confirm <id>"
    notices   words beside the reply, private or public                    default: the text step
    handoff   the conversation went to a person                            default: a line in the thread
    flag      moderation flagged the turn: the moderators' report          default: logged once

Retiring comes right after the text: the old controls must be taken before new ones are remembered.

One error policy for every platform: a failing step is logged with the conversation and the next step still
runs; a failing target or text step ends the delivery, logged as ``reply_undeliverable``. Nothing is raised
(the engine's turn still completes) but cancellation."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog
from structlog.typing import FilteringBoundLogger

from adapters.common.flags import FlagReport, WarnOnce, flag_report
from core.ops.jobs import Job
from core.types import (
    Attachment,
    Audience,
    Choice,
    ConfirmRequest,
    Notice,
    ReplyDone,
    ReplyEvent,
    ReplyKind,
    ReplyResult,
    Turn,
)

T = TypeVar("T")
log = structlog.get_logger("parley.deliver")

HANDOFF_TEXT = "I've handed this conversation to a person. I'll stay quiet here until someone resumes me."


@dataclass(frozen=True, slots=True)
class Shown:
    """What the text step showed: the result, and the platform's id of the first message carrying the
    reply ("" when none: nothing posted, or an answer the platform keeps private)."""

    result: ReplyResult | None
    anchor: str = ""


async def _once(result: ReplyResult) -> AsyncIterator[ReplyEvent]:
    yield ReplyDone(result)


class ReplyDelivery(ABC, Generic[T]):
    """A :class:`~core.ops.delivery.Delivery` made of steps. ``T`` is the platform's target."""

    platform = ""

    def __init__(self, *, redact: Callable[[str], str] | None = None) -> None:
        self.delivered = 0  # jobs finished (shown or given up on): tests and logs
        self._redact = redact  # the PII redactor, for what moderators are shown
        self._warn_unrouted = WarnOnce()

    # ------------------------------------------------------------------ the only deliver()

    async def deliver(self, job: Job, events: AsyncIterator[ReplyEvent]) -> None:
        await self.show(job, events)

    async def show(self, job: Job, events: AsyncIterator[ReplyEvent]) -> ReplyResult | None:
        """Every step in order; the result (None when the target or the text step failed)."""
        turn = job.turn
        dlog = log.bind(platform=self.platform, **context_of(turn))
        try:
            target = await self.target(job)
            shown = await self.text(job, target, events)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary: one policy for every platform
            dlog.error("reply_undeliverable", error=type(exc).__name__, detail=str(exc)[:200])
            self.delivered += 1
            return None
        result = shown.result
        if result is not None and result.kind is not ReplyKind.IGNORED:
            await self._steps(job, target, shown, result, dlog)
        self.delivered += 1
        return result

    async def _steps(
        self, job: Job, target: T, shown: Shown, result: ReplyResult, dlog: FilteringBoundLogger
    ) -> None:
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if result.retire:
            steps.append(("retire", lambda: self.retire(job, target, result.retire)))
        if result.attachments:
            steps.append(("files", lambda: self.files(job, target, shown, result.attachments)))
        if result.choices:
            steps.append(("choices", lambda: self.choices(job, target, shown, result.choices)))
        if (question := result.question) is not None:
            steps.append(("confirm", lambda: self.confirm(job, target, shown, question)))
        if result.notices:
            steps.append(("notices", lambda: self.notices(job, target, result.notices)))
        if result.handoff:
            steps.append(("handoff", lambda: self.handoff(job, target, shown)))
        if (report := flag_report(job.turn, result, self._redact)) is not None:
            steps.append(("flag", lambda: self.flag(job, target, report)))
        for name, step in steps:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the same policy: log, and the next step still runs
                dlog.error("reply_step_failed", step=name, error=type(exc).__name__, detail=str(exc)[:200])

    # ------------------------------------------------------------------ the platform's part

    @abstractmethod
    async def target(self, job: Job) -> T:
        """Where the job's reply goes (``ValueError``: a route that is not this platform's)."""

    @abstractmethod
    async def text(self, job: Job, target: T, events: AsyncIterator[ReplyEvent]) -> Shown:
        """Show the reply's text as it streams; consume ``events`` to the end."""

    # ------------------------------------------------------------------ steps with plain-text defaults

    async def say(self, job: Job, target: T, text: str, *, private: bool = False) -> None:
        """A short line beside the reply, through the text step (a platform with a private channel to the
        asker overrides this for ``private``)."""
        line = ReplyResult(job.turn.turn_id, ReplyKind.COMMAND, text, ephemeral=private)
        await self.text(job, target, _once(line))

    async def retire(self, job: Job, target: T, controls: tuple[str, ...]) -> None:
        """Take away controls that no longer apply; plain text has none."""
        return

    async def files(self, job: Job, target: T, shown: Shown, files: tuple[Attachment, ...]) -> None:
        names = ", ".join(f.title or f.filename for f in files)
        await self.say(job, target, f"(files this platform cannot show: {names})")

    async def choices(self, job: Job, target: T, shown: Shown, choices: tuple[Choice, ...]) -> None:
        lines = [f"/story {c.number}: {c.label}" for c in choices]
        await self.say(job, target, "Vote with:\n" + "\n".join(lines))

    async def confirm(self, job: Job, target: T, shown: Shown, question: ConfirmRequest) -> None:
        await self.say(
            job,
            target,
            f"Answer /tool confirm {question.id} to go ahead, or /tool cancel {question.id}.",
        )

    async def notices(self, job: Job, target: T, notices: tuple[Notice, ...]) -> None:
        for notice in notices:
            await self.say(job, target, notice.text, private=notice.audience is Audience.PRIVATE)

    async def handoff(self, job: Job, target: T, shown: Shown) -> None:
        await self.say(job, target, HANDOFF_TEXT)

    async def flag(self, job: Job, target: T, report: FlagReport) -> None:
        self._warn_unrouted(
            log.bind(platform=self.platform),
            "flags_unrouted",
            category=report.category,
            detail="flagged turns have nowhere to go on this platform; said once per process",
        )


def context_of(turn: Turn) -> dict[str, str]:
    return {"conversation": turn.place.conversation_id, "turn_id": turn.turn_id}
