"""A cancellation that arrives in the loop turn where the awaited thing finishes is not lost.

Python 3.11's ``asyncio.wait_for`` returns the result in that case and the task runs on: at shutdown a
reply's flusher, cancelled as its stream ended, went on to post the final text to a Slack that was gone
(2 s of connection retries past the deadline). ``core.tasks.wait_event`` (``asyncio.timeout``) keeps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.common.stream import StreamRenderer
from core.tasks import wait_event
from core.types import ReplyDelta, ReplyEvent


async def test_a_cancel_in_the_turn_the_event_is_set_is_kept() -> None:
    event = asyncio.Event()
    went_on: list[bool] = []

    async def waiter() -> None:
        went_on.append(await wait_event(event, 10))

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter is waiting
    event.set()
    task.cancel()  # same loop turn
    with pytest.raises(asyncio.CancelledError):
        await task
    assert went_on == []


async def test_wait_event_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 10) is True


class _Sink:
    limit = 2000

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.posted = asyncio.Event()

    def format(self, text: str) -> str:
        return text

    async def post(self, text: str) -> int:
        self.calls.append(("post", text))
        self.posted.set()
        return len(self.calls)

    async def edit(self, handle: int, text: str) -> None:
        self.calls.append(("edit", text))


async def test_a_reply_cancelled_while_its_flusher_paces_shows_nothing_more() -> None:
    sink = _Sink()
    stalled = asyncio.Event()  # never set: the model went quiet

    async def events() -> AsyncIterator[ReplyEvent]:
        yield ReplyDelta("Hello there, ")
        await stalled.wait()
        yield ReplyDelta("never shown")

    renderer: StreamRenderer[int] = StreamRenderer(sink, min_interval=2.0)
    task = asyncio.create_task(renderer.run(events()))
    await sink.posted.wait()
    for _ in range(3):  # the flusher goes on to its pacing wait
        await asyncio.sleep(0)
    task.cancel()  # shutdown: the stream's end and the flusher's cancel land in the same loop turn
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.calls == [("post", "Hello there,  …")]  # no final edit after the cancel
