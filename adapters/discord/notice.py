"""The moderators' notice of a flagged turn, as pure functions (house rule 1).

When moderation flags a turn (input or output) the engine puts the category in its result
(``ReplyResult.flag``); :class:`~adapters.discord.delivery.DiscordDelivery` then posts :func:`flag_notice` to
the configured moderators' channel (``moderators_channel_id``). The notice names the category, the turn, who
(display name and user id as plain text, never a mention), where (guild and channel, with a jump link to the
user's message when there is one) and the shared :class:`~adapters.common.flags.FlagReport`'s excerpt of what
the user wrote (redacted, then cut), shown as typed (Markdown escaped) and mention-safe.
"""

from __future__ import annotations

import discord

from adapters.common.flags import FlagReport
from adapters.discord.format import neutralise_mentions
from adapters.discord.links import jump_url as jump_url  # re-exported: delivery.py imports it here
from adapters.discord.route import ChannelTarget, Origin, Target

NOTICE_LIMIT = 2000  # Discord's message length


def origin_of(target: Target) -> Origin:
    """Where the user asked; a route without an origin (written by an older version) still names the
    channel, and for a message turn the message the reply answers."""
    if target.origin is not None:
        return target.origin
    message = target.reply_to if isinstance(target, ChannelTarget) else None
    return Origin(target.channel_id, message)


def plain(text: str) -> str:
    """Text shown as typed: Markdown escaped, mentions neutralised (on top of allowed_mentions)."""
    return neutralise_mentions(discord.utils.escape_markdown(text))


def _where(guild_id: int | None, origin: Origin) -> str:
    if guild_id is None:
        return f"DM (channel {origin.channel_id})"
    channel = f"#{plain(origin.channel_name)}" if origin.channel_name else ""
    names = " › ".join(part for part in (plain(origin.guild_name), channel) if part)
    ids = f"guild {guild_id}, channel {origin.channel_id}"
    return f"{names} ({ids})" if names else ids


def flag_notice(report: FlagReport, *, guild_id: int | None, origin: Origin) -> str:
    """The moderators' message for one flagged turn."""
    name = plain(report.user_name)
    who = f"{name} (user id {report.user_id})" if name else f"user id {report.user_id}"
    lines = [
        f"**Flagged: {plain(report.category)}**",
        f"Turn: `{report.turn_id}`",
        f"Who: {who}",
        f"Where: {_where(guild_id, origin)}",
    ]
    if origin.message_id is not None:
        lines.append(f"Message: {jump_url(guild_id, origin.channel_id, origin.message_id)}")
    elif report.command:
        lines.append(f"Command: /{plain(report.command)}")
    quoted = [f"> {plain(line)}" if line.strip() else ">" for line in report.excerpt.splitlines()]
    lines += quoted or ["> (no text)"]
    text = "\n".join(lines)
    return text if len(text) <= NOTICE_LIMIT else text[: NOTICE_LIMIT - 1] + "…"
