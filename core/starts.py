"""Turns start a few at a time (``PARLEY_TURN_STARTS``): the stages before the LLM request, in order.

A burst of turns on one event loop used to run their first stages (load, route, prompt, the LLM request's
hand-off) interleaved: each step of each turn waited for the same step of all the others, so every request
left only once all the turns' work before it was done (32 turns at once on Discord: first text after
0.74-0.85 s against the model's 0.30 s). With at most ``size`` turns in those stages at once the first
requests leave after a few turns' work and the model's wait overlaps the next turns' work: the same CPU,
first come first served instead of all served last.

A turn holds its place from the engine's start until it hands its request to the LLM, and gives it up before
anything that may wait long (the fair line for a generation slot, a command, moderation without an early
request, audio, images, the knowledge base) and whenever it ends. A turn waits at most ``max_wait`` seconds
for a place, then goes on without one: a slow holder (Redis failing over) never stalls the others for long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def _nothing() -> None:
    return None


class Starts:
    """At most ``size`` turns of this process in their first stages at once (``size`` 0: no limit)."""

    def __init__(self, size: int, max_wait: float = 0.5) -> None:
        self.size = size
        self.max_wait = max_wait
        self._places = asyncio.Semaphore(size) if size > 0 else None

    async def enter(self) -> Callable[[], None]:
        """Wait for a place (at most ``max_wait``); returns its release (idempotent; a no-op without one)."""
        places = self._places
        if places is None:
            return _nothing
        try:
            async with asyncio.timeout(self.max_wait):
                await places.acquire()
        except TimeoutError:
            return _nothing
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                places.release()

        return release
