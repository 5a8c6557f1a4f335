"""Builders for Discord API payloads shaped like the ones Discord really sends (API v10).

Every builder returns a plain ``dict`` ready to be JSON-encoded: the same objects serve the fake's REST
responses, its gateway dispatches and the unit tests of the adapter's translation functions. Field sets follow
``discord/types/*.py`` of discord.py and the shapes recorded from Discord's gateway.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits (https://discord.com/developers/docs/topics/permissions)
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
CREATE_PUBLIC_THREADS = 1 << 35
MEMBER_DEFAULT = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | READ_MESSAGE_HISTORY
    | MENTION_EVERYONE
    | USE_APPLICATION_COMMANDS
    | SEND_MESSAGES_IN_THREADS
    | CREATE_PUBLIC_THREADS
)

# Channel types
GUILD_TEXT = 0
DM = 1
PUBLIC_THREAD = 11

# Message types
DEFAULT = 0
REPLY = 19

_counter = itertools.count()
_lock = threading.Lock()


def snowflake(at: float | None = None) -> str:
    """A new, unique Discord snowflake (time-ordered, like Discord's own)."""
    ms = int((time.time() if at is None else at) * 1000) - DISCORD_EPOCH_MS
    with _lock:
        seq = next(_counter) & 0xFFF
    return str((ms << 22) | (1 << 17) | seq)


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


def user(
    user_id: str | None = None,
    username: str = "someone",
    *,
    bot: bool = False,
    global_name: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": user_id or snowflake(),
        "username": username,
        "discriminator": "0",
        "global_name": global_name,
        "avatar": None,
        "public_flags": 0,
    }
    if bot:
        data["bot"] = True
    return data


def member(
    user_data: dict[str, Any] | None, *, roles: list[str] | None = None, nick: str | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "roles": roles or [],
        "joined_at": iso_now(),
        "deaf": False,
        "mute": False,
        "flags": 0,
        "nick": nick,
        "avatar": None,
        "premium_since": None,
        "pending": False,
    }
    if user_data is not None:
        data["user"] = user_data
    return data


def role(role_id: str, name: str, permissions: int, position: int = 0) -> dict[str, Any]:
    return {
        "id": role_id,
        "name": name,
        "color": 0,
        "hoist": False,
        "position": position,
        "permissions": str(permissions),
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def text_channel(guild_id: str, name: str = "general", channel_id: str | None = None) -> dict[str, Any]:
    return {
        "id": channel_id or snowflake(),
        "type": GUILD_TEXT,
        "guild_id": guild_id,
        "name": name,
        "position": 0,
        "permission_overwrites": [],
        "parent_id": None,
        "nsfw": False,
        "topic": None,
        "rate_limit_per_user": 0,
        "last_message_id": None,
    }


def thread_channel(
    guild_id: str, parent_id: str, owner_id: str, name: str = "a thread", thread_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": thread_id or snowflake(),
        "type": PUBLIC_THREAD,
        "guild_id": guild_id,
        "parent_id": parent_id,
        "owner_id": owner_id,
        "name": name,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": iso_now(),
            "locked": False,
        },
    }


def dm_channel(channel_id: str, recipient: dict[str, Any]) -> dict[str, Any]:
    return {"id": channel_id, "type": DM, "last_message_id": None, "recipients": [recipient]}


def guild(
    guild_id: str,
    name: str,
    *,
    owner_id: str,
    channels: list[dict[str, Any]],
    threads: list[dict[str, Any]] | None = None,
    members: list[dict[str, Any]] | None = None,
    extra_roles: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A full GUILD_CREATE payload (what the gateway sends for an available guild)."""
    return {
        "id": guild_id,
        "name": name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "owner_id": owner_id,
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [role(guild_id, "@everyone", MEMBER_DEFAULT), *(extra_roles or [])],
        "emojis": [],
        "features": [],
        "mfa_level": 0,
        "application_id": None,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "vanity_url_code": None,
        "description": None,
        "banner": None,
        "premium_tier": 0,
        "preferred_locale": "en-US",
        "public_updates_channel_id": None,
        "nsfw_level": 0,
        "premium_progress_bar_enabled": False,
        "stickers": [],
        "joined_at": iso_now(),
        "large": False,
        "unavailable": False,
        "member_count": len(members or []),
        "voice_states": [],
        "members": members or [],
        "channels": channels,
        "threads": threads or [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def message(
    *,
    channel_id: str,
    author: dict[str, Any],
    content: str,
    guild_id: str | None = None,
    message_id: str | None = None,
    mentions: list[dict[str, Any]] | None = None,
    mention_roles: list[str] | None = None,
    mention_everyone: bool = False,
    referenced: dict[str, Any] | None = None,
    author_member: dict[str, Any] | None = None,
    webhook_id: str | None = None,
    message_type: int | None = None,
) -> dict[str, Any]:
    """A MESSAGE_CREATE payload (and the message object REST returns)."""
    data: dict[str, Any] = {
        "id": message_id or snowflake(),
        "channel_id": channel_id,
        "author": author,
        "content": content,
        "timestamp": iso_now(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": mention_everyone,
        "mentions": mentions or [],
        "mention_roles": mention_roles or [],
        "attachments": [],
        "embeds": [],
        "components": [],
        "pinned": False,
        "type": message_type if message_type is not None else (REPLY if referenced else DEFAULT),
        "flags": 0,
    }
    if guild_id is not None:
        data["guild_id"] = guild_id
        data["member"] = author_member or member(None)
    if webhook_id is not None:
        data["webhook_id"] = webhook_id
    if referenced is not None:
        data["message_reference"] = {
            "type": 0,
            "message_id": referenced["id"],
            "channel_id": referenced["channel_id"],
            **({"guild_id": guild_id} if guild_id else {}),
        }
        data["referenced_message"] = referenced
    return data


def option(name: str, value: str | int | bool, option_type: int = 3) -> dict[str, Any]:
    return {"name": name, "type": option_type, "value": value}


def slash_command(
    *,
    application_id: str,
    name: str,
    user_data: dict[str, Any],
    channel: dict[str, Any],
    guild_id: str | None = None,
    options: list[dict[str, Any]] | None = None,
    permissions: int = MEMBER_DEFAULT,
    command_id: str | None = None,
    interaction_id: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """An INTERACTION_CREATE payload for a chat-input (slash) command."""
    iid = interaction_id or snowflake()
    data: dict[str, Any] = {
        "id": iid,
        "application_id": application_id,
        "type": 2,
        "token": token or f"itoken-{iid}",
        "version": 1,
        "data": {
            "id": command_id or snowflake(),
            "name": name,
            "type": 1,
            **({"options": options} if options else {}),
        },
        "channel_id": channel["id"],
        "channel": channel,
        "app_permissions": str(MEMBER_DEFAULT),
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": 8 * 1024 * 1024,
    }
    return _invoked(data, user_data, guild_id, permissions)


def component_click(
    *,
    application_id: str,
    custom_id: str,
    message: dict[str, Any],
    user_data: dict[str, Any],
    channel: dict[str, Any],
    guild_id: str | None = None,
    permissions: int = MEMBER_DEFAULT,
) -> dict[str, Any]:
    """An INTERACTION_CREATE payload for a button click (a message component interaction)."""
    iid = snowflake()
    data: dict[str, Any] = {
        "id": iid,
        "application_id": application_id,
        "type": 3,
        "token": f"itoken-{iid}",
        "version": 1,
        "data": {"custom_id": custom_id, "component_type": 2},
        "message": message,
        "channel_id": channel["id"],
        "channel": channel,
        "app_permissions": str(MEMBER_DEFAULT),
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": 8 * 1024 * 1024,
    }
    return _invoked(data, user_data, guild_id, permissions)


def application(app_id: str, owner: dict[str, Any], name: str = "arcade") -> dict[str, Any]:
    """GET /oauth2/applications/@me."""
    return {
        "id": app_id,
        "name": name,
        "icon": None,
        "description": "",
        "summary": "",
        "type": None,
        "bot_public": True,
        "bot_require_code_grant": False,
        "owner": owner,
        "team": None,
        "verify_key": "0" * 64,
        "flags": 0,
        "interactions_endpoint_url": None,
        "tags": [],
        "redirect_uris": [],
    }


def _invoked(
    data: dict[str, Any], user_data: dict[str, Any], guild_id: str | None, permissions: int
) -> dict[str, Any]:
    """Where an interaction was invoked: a guild member (with permissions) or a DM user."""
    if guild_id is not None:
        data["guild_id"] = guild_id
        data["guild_locale"] = "en-US"
        data["member"] = {**member(user_data), "permissions": str(permissions)}
        data["authorizing_integration_owners"] = {"0": guild_id}
        data["context"] = 0
    else:
        data["user"] = user_data
        data["authorizing_integration_owners"] = {"1": user_data["id"]}
        data["context"] = 1
    return data
