"""An LLM request sent before the turn's input verdict is in (``[moderation] early_llm_request``).

The engine opens the stream with the request it would send after an allow, then waits for the verdict: the
moderation round trip and the model's time to first token overlap. Until :meth:`EarlyStream.take` hands the
stream over, only its first event is awaited (in a task this object owns) and held: nothing is shown, no tool
runs, nothing is stored. The stream is taken only for exactly the request it was opened with; a refusal, a
rewritten input or any other change to the request closes it (:meth:`EarlyStream.aclose`, which cancels the
HTTP request) and the real request is sent as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Generic, TypeVar

from core.llm import LLMRequest

E = TypeVar("E")
_END = object()  # the stream ended before its first event


class EarlyStream(Generic[E]):
    """``stream`` (already called with ``request``), advanced to its first event at once."""

    def __init__(self, request: LLMRequest, stream: AsyncGenerator[E, None]) -> None:
        self.request = request
        self._stream = stream
        self._first: asyncio.Task[E | object] = asyncio.create_task(self._open(), name="early-llm-request")
        self._taken = False

    async def _open(self) -> E | object:
        async for event in self._stream:
            return event
        return _END

    def take(self, request: LLMRequest) -> AsyncGenerator[E, None] | None:
        """The stream, when ``request`` is the one it was opened with (once); None otherwise."""
        if self._taken or request != self.request:
            return None
        self._taken = True
        return self._events()

    async def _events(self) -> AsyncGenerator[E, None]:
        try:
            first = await self._first
            if first is _END:
                return
            yield first  # type: ignore[misc]
            async for event in self._stream:
                yield event
        finally:
            await self._close()

    async def aclose(self) -> None:
        """Cancel the request unless it was taken (the taker closes it); idempotent."""
        if not self._taken:
            self._taken = True
            await self._close()

    async def _close(self) -> None:
        if not self._first.done():
            self._first.cancel()
            await asyncio.wait({self._first})
        if not self._first.cancelled():
            self._first.exception()  # a failure nobody will read (the request was dropped): retrieved
        await self._stream.aclose()
