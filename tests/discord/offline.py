"""Real discord.py objects built from recorded-style payloads, without a connection.

discord.py builds its models from a ``ConnectionState``; this helper gives one the guild and bot user the
fake Discord would send at start-up, so unit tests can run the adapter's view functions on genuine
``discord.Message`` / ``discord.Interaction`` objects.
"""

from __future__ import annotations

from typing import Any

import discord

from tests.fakes.discord import FakeDiscord


class OfflineDiscord:
    def __init__(self, world: FakeDiscord | None = None, *, intents: discord.Intents | None = None) -> None:
        self.world = world or FakeDiscord()
        self.client = discord.Client(intents=intents or discord.Intents.default())
        state = self.client._connection  # the one internal we lean on: discord.py's model factory
        state.user = discord.ClientUser(state=state, data=self.world.bot)  # type: ignore[arg-type]
        for guild in self.world.guilds.values():
            state._add_guild_from_data(guild)  # type: ignore[arg-type]
        self.state = state

    @property
    def bot_id(self) -> int:
        return int(self.world.app_id)

    def message(self, payload: dict[str, Any]) -> discord.Message:
        channel, _guild = self.state._get_guild_channel(payload)  # type: ignore[arg-type]
        return discord.Message(state=self.state, channel=channel, data=payload)  # type: ignore[arg-type]

    def interaction(self, payload: dict[str, Any]) -> discord.Interaction[discord.Client]:
        return discord.Interaction(data=payload, state=self.state)  # type: ignore[arg-type]
