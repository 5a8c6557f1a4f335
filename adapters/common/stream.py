"""Render a reply stream onto a platform: one early message, paced edits, overflow into new messages.

The renderer owns two tasks in a TaskGroup: one pulls events from the engine, the other flushes the
accumulated text to the platform at most once per ``min_interval`` seconds per message. A platform failure
is logged with the conversation and never stops the engine's stream (the engine still records the turn).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import structlog

from adapters.common.citations import shown_text
from adapters.common.split import split_text
from core.reply import ReplyFold
from core.tasks import wait_event
from core.types import ReplyEvent, ReplyNotice, ReplyResult

H = TypeVar("H")
log = structlog.get_logger("parley.render")


class MessageSink(Protocol[H]):
    """Where a reply lands: post a new message or edit one already posted."""

    limit: int  # the platform's maximum message length, after formatting

    def format(self, text: str) -> str:
        """Markdown from the model -> the platform's markup, escaped and mention-safe."""
        ...

    async def post(self, text: str) -> H: ...

    async def edit(self, handle: H, text: str) -> None: ...


@dataclass
class RenderOutcome(Generic[H]):
    result: ReplyResult | None = None
    handles: list[H] = field(default_factory=list)
    failures: int = 0
    posts: int = 0
    edits: int = 0

    @property
    def delivered(self) -> bool:
        return self.failures == 0 and (self.result is None or bool(self.handles) or not self.result.text)


class StreamRenderer(Generic[H]):
    """Pace a reply stream onto a :class:`MessageSink`."""

    def __init__(
        self,
        sink: MessageSink[H],
        *,
        min_interval: float = 1.0,
        cursor: str = " …",
        log_context: dict[str, str] | None = None,
    ) -> None:
        self._sink = sink
        self._interval = min_interval
        self._cursor = cursor
        self._log = log.bind(**(log_context or {}))
        self._text = ""
        self._done = False
        self._finished = asyncio.Event()  # the stream ended: the last edit need not wait a whole interval
        self._dirty = asyncio.Event()
        self._shown: list[str] = []
        self.outcome: RenderOutcome[H] = RenderOutcome()

    async def run(self, events: AsyncIterator[ReplyEvent]) -> RenderOutcome[H]:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._flusher())
            try:
                await self._consume(events)
            finally:
                self._done = True
                self._finished.set()
                self._dirty.set()
        return self.outcome

    async def _consume(self, events: AsyncIterator[ReplyEvent]) -> None:
        fold = ReplyFold()
        async for event in events:
            if isinstance(event, ReplyNotice):
                await self._notice(event.text)
                continue
            fold.add(event)
            self.outcome.result = fold.result
            # The finished reply shows with its sources line when it cites any.
            self._text = shown_text(fold.result) if fold.result is not None else fold.text
            self._dirty.set()

    async def _notice(self, text: str) -> None:
        """A word beside the reply (a long wait): its own message, not one the reply will edit."""
        try:
            await self._sink.post(self._sink.format(text))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary: a notice that cannot be shown must not stop the reply
            self._log.warning("notice_delivery_failed", error=type(exc).__name__, detail=str(exc)[:200])

    async def _flusher(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            final = self._done
            await self._flush(final)
            if final:
                return
            # Pace edits: a full interval between the end of one flush and the next (platform rate limits),
            # but the final text goes out a quarter interval after the last edit: one early edit per reply
            # stays well within the platforms' per-message buckets, and the user is not kept waiting for
            # an answer that is already complete. Counting from the flush's end means a slow or
            # rate-limited call (a 429 retried inside the SDK) cannot shorten the gap.
            loop = asyncio.get_running_loop()
            flushed = loop.time()
            await wait_event(self._finished, self._interval)
            await asyncio.sleep(max(0.0, flushed + self._interval / 4 - loop.time()))

    async def _flush(self, final: bool) -> None:
        text = self._text
        if not text.strip():
            return
        formatted = self._sink.format(text)
        chunks = split_text(formatted, self._sink.limit - len(self._cursor))
        if not final:
            chunks[-1] += self._cursor
        for i, chunk in enumerate(chunks):
            if i < len(self._shown) and self._shown[i] == chunk:
                continue
            try:
                if i < len(self.outcome.handles):
                    await self._sink.edit(self.outcome.handles[i], chunk)
                    self.outcome.edits += 1
                else:
                    self.outcome.handles.append(await self._sink.post(chunk))
                    self.outcome.posts += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # task boundary: a platform failure must not end the reply stream
                self.outcome.failures += 1
                self._log.warning("reply_delivery_failed", error=type(exc).__name__, detail=str(exc)[:200])
                return
            if i < len(self._shown):
                self._shown[i] = chunk
            else:
                self._shown.append(chunk)
        # Messages beyond the new text (the reply was replaced by something shorter) are blanked.
        for j in range(len(chunks), len(self.outcome.handles)):
            if j < len(self._shown) and self._shown[j] == "\u200b":
                continue
            try:
                await self._sink.edit(self.outcome.handles[j], "\u200b")
                self._shown[j] = "\u200b"
                self.outcome.edits += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # task boundary, as above
                self.outcome.failures += 1
                self._log.warning("reply_delivery_failed", error=type(exc).__name__, detail=str(exc)[:200])
