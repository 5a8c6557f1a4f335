"""A fake Discord (REST API v10 + gateway) on loopback, for driving the real discord.py client in tests."""

from tests.fakes.discord.server import Call, FakeDiscord, Fault, InteractionState, Ping, Unfurl, autolinks

__all__ = ["Call", "FakeDiscord", "Fault", "InteractionState", "Ping", "Unfurl", "autolinks"]
