"""The moderators' report of a flagged turn, platform-neutral. Pure but for :class:`WarnOnce`.

The engine puts the category in a turn's result (``ReplyResult.flag``) when moderation flags its input or its
output. :func:`flag_report` turns that into one :class:`FlagReport`: the facts every platform shows (category,
outcome, turn, who, an excerpt of the user's words, redacted *then* cut to :data:`EXCERPT_CHARS`). Each
adapter only renders it as plain, mention-safe text in its own markup and adds where it happened
(``adapters.slack.flags``, ``adapters.discord.notice``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from core.types import ReplyKind, ReplyResult, Turn

EXCERPT_CHARS = 300


@dataclass(frozen=True, slots=True)
class FlagReport:
    category: str
    turn_id: str
    kind: ReplyKind
    user_id: str
    user_name: str  # "" when unknown
    excerpt: str  # the user's words: PII redacted, then cut (see excerpt())
    command: str = ""  # the command's name when the turn was a slash command


def excerpt(text: str, redact: Callable[[str], str] | None = None, *, limit: int = EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of the user's words, personal data redacted. Redaction comes first: a
    cut must not leave half an address that the redactor would no longer recognise."""
    if redact is not None:
        text = redact(text)
    text = text.strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def flag_report(turn: Turn, result: ReplyResult, redact: Callable[[str], str] | None) -> FlagReport | None:
    """The report for a flagged turn; None when there is nothing to report (not flagged, or ignored)."""
    category = result.flag
    if not category or result.kind is ReplyKind.IGNORED:
        return None
    return FlagReport(
        category=category,
        turn_id=turn.turn_id,
        kind=result.kind,
        user_id=turn.author.id,
        user_name=turn.author.display_name,
        excerpt=excerpt(turn.text, redact),
        command=turn.command.name if turn.command is not None else "",
    )


class WarnOnce:
    """Says "flagged turns have nowhere to go" once per Delivery (one per process), not once per turn."""

    __slots__ = ("said",)

    def __init__(self) -> None:
        self.said = False

    def __call__(self, log: FilteringBoundLogger, event: str, **fields: object) -> None:
        if not self.said:
            self.said = True
            log.warning(event, **fields)
