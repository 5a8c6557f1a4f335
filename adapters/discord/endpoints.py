"""Where discord.py sends its requests: the one place that touches discord.py's process-wide endpoints.

discord.py has no per-client setting for these, only two class attributes:

- ``discord.http.Route.BASE``: the REST base every request (bot and interaction webhooks alike) is built
  from. Set from ``DISCORD_API_URL`` so a REST proxy (shared rate limits) or a test fake can sit there.
- ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``: the gateway discord.py connects to whenever it has
  no better URL: with an explicit shard count (``AutoShardedClient`` only asks ``GET /gateway/bot`` when
  the count is automatic) and after a session is invalidated. When the REST base is overridden we set it
  from ``GET /gateway/bot`` of that base, so the gateway always matches the API we were pointed at.

Both are process-wide: one process serves one Discord API (a second adapter in the same process must use
the same URL). :func:`restore` puts discord.py's defaults back.
"""

from __future__ import annotations

import discord
import discord.gateway
import discord.http
import yarl

_ORIGINAL_BASE = discord.http.Route.BASE
_ORIGINAL_GATEWAY = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


def use_api(api_url: str) -> None:
    """Send every REST call (including interaction webhooks) to ``api_url`` (e.g. .../api/v10)."""
    discord.http.Route.BASE = api_url.rstrip("/")


async def use_gateway_of(client: discord.Client) -> str:
    """Ask the configured API for its gateway (``GET /gateway/bot``) and make it discord.py's default."""
    _shards, url, _limits = await client.http.get_bot_gateway()
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
    return url


def restore() -> None:
    discord.http.Route.BASE = _ORIGINAL_BASE
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = _ORIGINAL_GATEWAY
