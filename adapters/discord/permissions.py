"""Typed commands (``@bot /imagine ...``) against what a server's admins set for the slash command.

An admin can limit a slash command to some roles, members or channels (Server Settings > Integrations);
Discord enforces that for the slash command only. A typed command reaches the bot as a plain message, so
the adapter reads the guild's application command permissions (``GET /applications/{app}/guilds/{guild}/
commands/permissions``, cached in Redis, dropped when the gateway says they changed) and refuses the typed
form of every command an admin restricted there: the user is told to use the slash command, which Discord
checks. Which commands count as restricted (:func:`restricted_names`): one with any permission overwrite of
its own in the guild, or every command when the admins set overwrites for the whole application. The
engine's own admin checks (``admin_only``, ``admin_commands``) apply on top, to both forms.

When the permissions cannot be read (Discord or Redis failing), typed commands in that guild are refused
the same way (fail closed): the slash command still works.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import discord
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from core.keys import KeySpace

CACHE_SECONDS = 300  # an admin's change also drops the cache at once (APPLICATION_COMMAND_PERMISSIONS_UPDATE)

log = structlog.get_logger("parley.discord")


def restricted_names(
    permissions: Iterable[Mapping[str, Any]], commands: Iterable[Mapping[str, Any]], app_id: str
) -> frozenset[str]:
    """The names of the commands an admin restricted in a guild, from Discord's permission entries (one per
    command with overwrites, ``id`` = the command's id; ``id`` = the application's id for app-wide ones)."""
    names = {str(c["id"]): str(c["name"]) for c in commands}
    limited = {str(entry["id"]) for entry in permissions if entry.get("permissions")}
    if app_id in limited:
        return frozenset(names.values())
    return frozenset(names[i] for i in limited if i in names)


class TypedCommandGate:
    """Which commands may not be typed in a guild; the answer cached in Redis for every replica."""

    def __init__(self, redis: aioredis.Redis, keys: KeySpace, *, dev_guild_id: int | None = None) -> None:
        self._r = redis
        self._keys = keys
        self._dev_guild = dev_guild_id

    def _key(self, guild_id: int) -> str:
        return self._keys.scoped("discord", "command_permissions", str(guild_id))

    async def restricted(self, client: discord.Client, guild_id: int) -> frozenset[str] | None:
        """Restricted command names in the guild, or None when they cannot be known right now."""
        key = self._key(guild_id)
        try:
            cached = await self._r.get(key)
            if cached is not None:
                return frozenset(json.loads(cached))
            names = await self._fetch(client, guild_id)
            await self._r.set(key, json.dumps(sorted(names)), ex=CACHE_SECONDS)
        except (RedisError, discord.HTTPException, ValueError) as exc:
            log.warning("discord_command_permissions_unknown", guild=str(guild_id), error=type(exc).__name__)
            return None
        return names

    async def _fetch(self, client: discord.Client, guild_id: int) -> frozenset[str]:
        app_id = client.application_id
        assert app_id is not None
        http = client.http
        permissions = await http.get_guild_application_command_permissions(app_id, guild_id)
        commands: list[Any] = list(await http.get_global_commands(app_id))
        if self._dev_guild == guild_id:
            commands += await http.get_guild_commands(app_id, guild_id)
        return restricted_names([dict(p) for p in permissions], [dict(c) for c in commands], str(app_id))

    async def changed(self, guild_id: int) -> None:
        """The gateway said an admin changed the permissions: read them again on next use."""
        try:
            await self._r.delete(self._key(guild_id))
        except RedisError as exc:  # the cache then runs out within CACHE_SECONDS
            log.warning("discord_command_permissions_stale", guild=str(guild_id), error=str(exc))


def typed_refusal(name: str) -> str:
    return (
        f"An admin limited /{name} on this server, so I only take it as the slash command: type /{name} "
        "and pick it from Discord's list (Discord then checks who may use it here)."
    )
