"""The Discord platform package (:class:`~adapters.common.platform.PlatformModule`): ``load_settings``,
``build_delivery`` / ``build_adapter`` for ``parley run``, ``check`` for ``parley check``.

Modules: :mod:`.settings` (DISCORD_* and bot.toml ``[discord]``), :mod:`.translate` (events -> Turn, pure),
:mod:`.commands` (registry -> slash commands, fingerprint, pure), :mod:`.route` (where a queued reply goes,
pure), :mod:`.format` (Markdown -> safe Discord text, pure), :mod:`.adapter` (the gateway side: accept
events, dispatch turns), :mod:`.delivery` (the worker side: show replies over REST), :mod:`.sink` (post and
edit messages), :mod:`.notice` (the moderators' notice of a flagged turn, pure), :mod:`.endpoints` (REST base
and gateway URL), :mod:`.links` (``link_for(place)``: the conversation's discord.com URL, pure).
"""

from __future__ import annotations

import aiohttp
import discord

from adapters.common.deps import EdgeDeps
from adapters.discord import endpoints
from adapters.discord.adapter import DiscordAdapter, build_intents
from adapters.discord.delivery import DiscordDelivery
from adapters.discord.links import link_for
from adapters.discord.settings import DiscordSettings, load_discord_settings
from core.bot import BotSpec

__all__ = [
    "DiscordAdapter",
    "DiscordDelivery",
    "DiscordSettings",
    "build_adapter",
    "build_delivery",
    "check",
    "link_for",
    "load_discord_settings",
    "load_settings",
]


def load_settings(bot: BotSpec) -> DiscordSettings:
    """DISCORD_* from the environment over ``bot``'s ``[discord]`` table over the defaults."""
    return load_discord_settings(bot.platform_config("discord"))


def build_adapter(deps: EdgeDeps, settings: DiscordSettings, delivery: DiscordDelivery) -> DiscordAdapter:
    """The gateway side. It shares nothing with ``delivery``: replies go through the queue's workers."""
    del delivery
    return DiscordAdapter(deps, settings)


def build_delivery(deps: EdgeDeps, settings: DiscordSettings) -> DiscordDelivery:
    """How queue workers show replies on Discord (REST only: also fine in a ``--workers-only`` process)."""
    return DiscordDelivery(deps, settings)


async def check(deps: EdgeDeps, settings: DiscordSettings) -> list[str]:
    """Problems that would stop the bot on Discord: the token, the message-content intent."""
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
