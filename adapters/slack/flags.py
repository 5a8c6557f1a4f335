"""The moderators' notice for a flagged turn. Pure.

The engine puts ``meta["flag"] = <category>`` in a turn's result when moderation flags its input or its
output; :class:`~adapters.slack.delivery.SlackDelivery` posts this notice to ``moderators_channel``. Every
value in it is plain text under the adapter's output escaping (:func:`~adapters.slack.mrkdwn.escape` and
:func:`~adapters.slack.mrkdwn.neutralise_broadcasts`): the user id is shown, never ``<@…>``, the channel
is its id, never ``<#…>``, and the user's words (already through the PII redactor) are quoted, so nothing in
the notice can ping anyone or become a link of its own. The only link is Slack's own permalink, and the
notice is posted with unfurling off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adapters.slack.mrkdwn import escape, neutralise_broadcasts
from core.types import ReplyKind

EXCERPT_CHARS = 300

_OUTCOME = {
    ReplyKind.ANSWER: "answered",
    ReplyKind.COMMAND: "command answered",
    ReplyKind.REFUSAL: "refused",
    ReplyKind.ERROR: "failed",
}
_PERMALINK = re.compile(r"https://[^\s<>|]+")


@dataclass(frozen=True, slots=True)
class FlagNotice:
    category: str
    turn_id: str
    kind: ReplyKind
    user_id: str
    user_name: str  # "" when unknown
    channel: str
    permalink: str  # "" when Slack would not give one
    excerpt: str  # the user's message, PII already redacted; cut to EXCERPT_CHARS by notice_text


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of ``text`` (redact *before* cutting, or half an address survives)."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def plain(text: str) -> str:
    """Text shown as written in mrkdwn: no control sequence, no broadcast word."""
    return neutralise_broadcasts(escape(text))


def notice_text(n: FlagNotice) -> str:
    """The notice, in mrkdwn."""
    who = f"{plain(n.user_name)} ({plain(n.user_id)})" if n.user_name else plain(n.user_id)
    where = plain(n.channel)
    if n.permalink and _PERMALINK.fullmatch(n.permalink):
        where += f", <{escape(n.permalink)}|the message>"
    outcome = _OUTCOME.get(n.kind, n.kind.value)
    lines = [
        f":triangular_flag_on_post: Moderation flag: *{plain(n.category)}* ({outcome})",
        f"Turn: {plain(n.turn_id)}",
        f"Who: {who}",
        f"Where: {where}",
    ]
    quoted = [f">{plain(line)}" for line in excerpt(n.excerpt).split("\n")]
    return "\n".join(lines + (quoted if n.excerpt.strip() else ["(no text)"]))
