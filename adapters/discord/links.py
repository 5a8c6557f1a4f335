"""Links into Discord: a conversation (``link_for(place)``, the console's "open in Discord") and a message
(``jump_url``, the moderators' notice). Pure.

``discord.com/channels/<guild or @me>/<channel>[/<message>]``: a thread is a channel of its own, so a
thread's link names the thread; DMs use ``@me`` (what Discord itself puts in a DM's URL, and the workspace
the adapter gives them).
"""

from __future__ import annotations

from core.types import Place

JUMP_BASE = "https://discord.com/channels"
DM_GUILD = "@me"


def link_for(place: Place) -> str:
    """The conversation's Discord URL; '' when the place lacks a guild (or ``@me``) or a channel."""
    if not (place.workspace and place.channel):
        return ""
    return f"{JUMP_BASE}/{place.workspace}/{place.thread or place.channel}"


def jump_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    """Discord's link to a message (``@me`` for a DM)."""
    guild = DM_GUILD if guild_id is None else str(guild_id)
    return f"{JUMP_BASE}/{guild}/{channel_id}/{message_id}"
