"""The moderators' notice for a flagged turn, in Slack mrkdwn. Pure.

:class:`~adapters.slack.delivery.SlackDelivery` posts it to ``moderators_channel``; the facts come from the
shared :class:`~adapters.common.flags.FlagReport`. Every value in it is plain text under the adapter's output
escaping (:func:`~adapters.slack.mrkdwn.escape` and :func:`~adapters.slack.mrkdwn.neutralise_broadcasts`):
the user id is shown, never ``<@…>``, the channel is its id, never ``<#…>``, and the user's words (already
through the PII redactor) are quoted, so nothing in the notice can ping anyone or become a link of its own.
The only link is Slack's own permalink, and the notice is posted with unfurling off.
"""

from __future__ import annotations

import re

from adapters.common.flags import FlagReport
from adapters.slack.mrkdwn import escape, neutralise_broadcasts
from core.types import ReplyKind

_OUTCOME = {
    ReplyKind.ANSWER: "answered",
    ReplyKind.COMMAND: "command answered",
    ReplyKind.REFUSAL: "refused",
    ReplyKind.ERROR: "failed",
}
_PERMALINK = re.compile(r"https://[^\s<>|]+")


def plain(text: str) -> str:
    """Text shown as written in mrkdwn: no control sequence, no broadcast word."""
    return neutralise_broadcasts(escape(text))


def notice_text(report: FlagReport, channel: str, permalink: str = "") -> str:
    """The notice, in mrkdwn (``permalink``: Slack's link to the user's message, "" when there is none)."""
    who = (
        f"{plain(report.user_name)} ({plain(report.user_id)})" if report.user_name else plain(report.user_id)
    )
    where = plain(channel)
    if permalink and _PERMALINK.fullmatch(permalink):
        where += f", <{escape(permalink)}|the message>"
    outcome = _OUTCOME.get(report.kind, report.kind.value)
    lines = [
        f":triangular_flag_on_post: Moderation flag: *{plain(report.category)}* ({outcome})",
        f"Turn: {plain(report.turn_id)}",
        f"Who: {who}",
        f"Where: {where}",
    ]
    words = report.excerpt.strip()
    quoted = [f">{plain(line)}" for line in words.split("\n")]
    return "\n".join(lines + (quoted if words else ["(no text)"]))
