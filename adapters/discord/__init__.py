"""Discord: ``build_adapter`` / ``build_delivery`` for ``parley run``, ``check`` for ``parley check``.

Modules: :mod:`.settings` (DISCORD_* and bot.toml ``[discord]``), :mod:`.translate` (events -> Turn, pure),
:mod:`.commands` (registry -> slash commands, fingerprint, pure), :mod:`.route` (where a queued reply goes,
pure), :mod:`.format` (Markdown -> safe Discord text, pure), :mod:`.adapter` (the gateway side: accept
events, dispatch turns), :mod:`.delivery` (the worker side: show replies over REST), :mod:`.sink` (post and
edit messages), :mod:`.notice` (the moderators' notice of a flagged turn, pure), :mod:`.endpoints` (REST base
and gateway URL).
"""

from __future__ import annotations

import aiohttp
import discord

from adapters.discord import endpoints
from adapters.discord.adapter import DiscordAdapter, build_intents
from adapters.discord.delivery import DiscordDelivery
from adapters.discord.settings import DiscordSettings, load_discord_settings
from core.errors import ConfigError
from core.runtime import Runtime

__all__ = [
    "DiscordAdapter",
    "DiscordDelivery",
    "DiscordSettings",
    "build_adapter",
    "build_delivery",
    "check",
    "load_discord_settings",
]


def build_adapter(runtime: Runtime) -> DiscordAdapter:
    """The adapter for ``runtime``'s bot, configured from the environment over its ``[discord]`` table."""
    return DiscordAdapter(runtime, load_discord_settings(runtime.bot.platform_config("discord")))


def build_delivery(runtime: Runtime) -> DiscordDelivery:
    """How queue workers show replies on Discord (REST only: also fine in a ``--workers-only`` process)."""
    return DiscordDelivery(runtime, load_discord_settings(runtime.bot.platform_config("discord")))


async def check(runtime: Runtime) -> list[str]:
    """Problems that would stop the bot on Discord: settings, the token, the message-content intent."""
    try:
        settings = load_discord_settings(runtime.bot.platform_config("discord"))
    except ConfigError as exc:
        return [str(exc)]
    if settings.token is None:
        return ["DISCORD_TOKEN is not set (the bot token from the Developer Portal, Bot page)"]
    endpoints.use_api(settings.api_url)
    client = discord.Client(intents=build_intents(settings))
    problems: list[str] = []
    try:
        await client.login(settings.token.get_secret_value())
        app = client.application
        if settings.wants_message_content and app is not None:
            flags = app.flags
            if not (flags.gateway_message_content or flags.gateway_message_content_limited):
                problems.append(
                    "DISCORD_MESSAGE_CONTENT / DISCORD_LISTEN_CHANNELS need the Message Content intent: "
                    "enable it on the Developer Portal's Bot page"
                )
        print(f"discord: ok (logged in as {client.user} via {settings.api_url})")
    except discord.LoginFailure:
        problems.append("DISCORD_TOKEN: Discord rejected the token (401 Unauthorized)")
    except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
        problems.append(f"Discord API at {settings.api_url}: {type(exc).__name__}: {exc}")
    finally:
        await client.close()
        endpoints.restore()
    return problems
