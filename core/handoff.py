"""Handing a paused conversation back to the bot: the one ``resume`` behind the console's Resume button,
Slack's "Resume bot" button and ``/resume``.

Each path used to do its own part (the console cleared the pause, marked the handoff resumed and audited it;
the button and the command only cleared the pause, so their handoffs kept ageing in the console's inbox).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from core.safety.events import Decision
from core.types import Author, Place, Turn

if TYPE_CHECKING:
    from core.console.stats import DailyStats
    from core.memory import RedisMemory
    from core.safety.events import EventLog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Handoffs:
    memory: RedisMemory
    stats: DailyStats | None  # the console's aggregates (its inbox of handoffs); None when it is off
    events: EventLog | None  # the safety event stream, where operators' actions are audited

    async def resume(self, place: Place, *, by: str, via: str, actor: str = "") -> None:
        """Let the bot answer in ``place`` again: clear the pause, mark the handoff resumed (``by``: the
        console account or the platform user) and audit it (``via``: console, button, command; ``actor``:
        the audit's user id, ``by`` by default). Store errors propagate: nothing is reported done then."""
        await self.memory.delete_meta(place, "paused", "paused_by")
        if self.stats is not None:
            await self.stats.mark_resumed(place, by)
        if self.events is not None:
            when = int(time.time())
            turn = Turn(author=Author(id=actor or by), place=place, text="", turn_id=f"{via}-{when}")
            await self.events.record(turn, [Decision("admin", "handoff", "resume", via, f"{via}: {by}")])
        log.info("handoff_resumed", by=by, via=via, conversation=place.conversation_id)
