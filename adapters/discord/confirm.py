"""Confirm / cancel buttons (message components) for a proposed side-effecting tool call, and the click
as a turn. The custom ids carry the pending call's id; the core checks that the clicker is the user it was
proposed to.
"""

from __future__ import annotations

import discord

from adapters.discord.translate import InteractionView, place_for
from core.clicks import CANCEL, CONFIRM, confirm_call
from core.types import Author, CommandCall, Turn

PREFIX = "parley:tool:"


def custom_id(pending_id: str, confirmed: bool) -> str:
    return f"{PREFIX}{CONFIRM if confirmed else CANCEL}:{pending_id}"


def call_from_custom_id(value: str) -> CommandCall | None:
    """``parley:tool:confirm:<id>`` -> ``/tool confirm <id>``; ``None`` for anyone else's component."""
    if not value.startswith(PREFIX):
        return None
    action, _, pending_id = value[len(PREFIX) :].partition(":")
    if action not in (CONFIRM, CANCEL) or not pending_id or len(pending_id) > 64:
        return None
    return confirm_call(pending_id, action == CONFIRM)


def turn_from_tool_click(view: InteractionView, call: CommandCall) -> Turn:
    return Turn(
        author=Author(view.user_id, view.user_name, view.user_is_bot, view.user_is_admin),
        place=place_for(view.guild_id, view.channel_id, view.thread_parent_id),
        text=f"/{call.name} {call.args}",
        message_id=view.id,
        addressed=True,
        event_id=view.id,
        command=call,
    )


def confirm_view(pending_id: str) -> discord.ui.View:
    """The two buttons (no timeout: the pending call's TTL in Redis decides how long a click counts)."""
    view = discord.ui.View(timeout=None)
    view.add_item(
        discord.ui.Button(
            label="Confirm", style=discord.ButtonStyle.success, custom_id=custom_id(pending_id, True)
        )
    )
    view.add_item(
        discord.ui.Button(
            label="Cancel", style=discord.ButtonStyle.secondary, custom_id=custom_id(pending_id, False)
        )
    )
    return view
