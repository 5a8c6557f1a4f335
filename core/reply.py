"""Folding a reply stream: the one place that knows what a stream of :data:`~core.types.ReplyEvent` means.

Deltas append, a replace swaps everything shown so far, the one :class:`~core.types.ReplyDone` carries the
final result. Adapters render with it, queue workers watch with it, tests read what a user saw with it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from core.types import ReplyDelta, ReplyDone, ReplyEvent, ReplyKind, ReplyReplace, ReplyResult


class ReplyFold:
    """What a reply stream amounts to so far."""

    __slots__ = ("result", "shown")

    def __init__(self) -> None:
        self.shown = ""  # what the deltas and replaces have put on screen
        self.result: ReplyResult | None = None  # set by the stream's ReplyDone

    def add(self, event: ReplyEvent) -> ReplyEvent:
        """Fold one event in; returns it, so a pass-through reads ``yield fold.add(event)``."""
        if isinstance(event, ReplyDelta):
            self.shown += event.text
        elif isinstance(event, ReplyReplace):
            self.shown = event.text
        elif isinstance(event, ReplyDone):
            self.result = event.result
        return event

    @property
    def text(self) -> str:
        """The final text once the stream is done (the result's), else what has been shown."""
        return self.result.text if self.result is not None else self.shown

    def outcome(self) -> ReplyResult:
        """The result; a stream that ended without ReplyDone is an error carrying what was shown."""
        return self.result if self.result is not None else ReplyResult("", ReplyKind.ERROR, self.shown)

    def watch(self, events: AsyncIterator[ReplyEvent]) -> FoldingStream:
        """``events`` passed through unchanged, folded into this as they go by."""
        return FoldingStream(self, events)


class FoldingStream:
    """An async iterator over a reply stream that folds each event as it passes.

    A plain iterator, not an async generator: whoever owns ``events`` closes it, and this may be resumed
    after a consumer stopped early (a queue worker drains what its delivery left).
    """

    __slots__ = ("_events", "fold")

    def __init__(self, fold: ReplyFold, events: AsyncIterator[ReplyEvent]) -> None:
        self.fold = fold
        self._events = events

    def __aiter__(self) -> FoldingStream:
        return self

    async def __anext__(self) -> ReplyEvent:
        return self.fold.add(await anext(self._events))


async def fold_reply(events: AsyncIterator[ReplyEvent], *, first: ReplyEvent | None = None) -> ReplyFold:
    """Consume ``events`` (after ``first``, already taken from it) to the end."""
    fold = ReplyFold()
    if first is not None:
        fold.add(first)
    async for event in events:
        fold.add(event)
    return fold
