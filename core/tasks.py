"""An owner for background tasks (house rule 7): every task is kept, and cancelled and awaited on close."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger("parley.tasks")


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait up to ``seconds`` for ``event``; whether it is set.

    ``asyncio.timeout``, never ``asyncio.wait_for`` (banned by ruff): on Python 3.11 ``wait_for`` loses a
    cancellation that arrives in the loop turn where the awaited thing finishes, and the task runs on (a
    reply's flusher went on to post to a dead Slack for 2 s past the shutdown deadline)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


class TaskOwner:
    def __init__(self, name: str = "parley") -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._name}: task owner is closed")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background_task_failed", task=task.get_name(), error=repr(exc))

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, seconds: float | None = None) -> None:
        """Wait for the running tasks to finish by themselves (for tests and graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)

    async def aclose(self, grace: float = 0.0) -> None:
        """Give tasks ``grace`` seconds, then cancel what is left and await it. Idempotent."""
        self._closed = True
        if grace and self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
