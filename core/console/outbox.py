"""The port the console answers customers through: ``Outbox.post(place, text)``.

A platform's Delivery (Slack, Discord) provides it; the console finds it by platform name and never imports
an adapter. ``post`` shows ``text`` as the bot in the conversation's thread or channel, with the platform's
mention safety, and returns the platform's message id; it raises :class:`~core.errors.ParleyError` (or a
subclass) when the platform refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from core.types import Place


@runtime_checkable
class Outbox(Protocol):
    async def post(self, place: Place, text: str) -> str: ...


OutboxFor = Callable[[str], Outbox | None]
"""The outbox of a platform in this process (None: that platform is not connected here)."""


def no_outbox(platform: str) -> Outbox | None:
    return None
