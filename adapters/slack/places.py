"""Where a Slack conversation is: its :class:`Place` (direct or not) and the link that opens it. Pure.

Slack knowledge stays here, not in core: direct-message channel ids start with "D" ("C" public, "G" older
private channels), and ``slack.com/archives/<channel>/p<ts without the dot>`` opens a message (Slack's
permalink shape; slack.com sends the browser on to the workspace).
"""

from __future__ import annotations

from core.types import Place

PLATFORM = "slack"


def place_of(team: str, channel: str, thread: str = "", *, im: bool = False) -> Place:
    """A Slack conversation; direct when Slack says so (``channel_type`` ``im``) or the channel is a DM."""
    return Place(PLATFORM, team, channel, thread, is_direct=im or channel.startswith("D"))


def link_for(place: Place) -> str:
    """A link that opens the conversation (its thread when it has one) in Slack; '' without a channel."""
    if not place.channel:
        return ""
    ts = place.thread.replace(".", "")
    return f"https://slack.com/archives/{place.channel}" + (f"/p{ts}" if ts else "")
