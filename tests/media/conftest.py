"""The media tests drive the real adapters: the Discord and Slack fixtures are shared from their folders."""

from tests.discord.conftest import bot_factory, fake_discord
from tests.slack.conftest import slack, start_slack

__all__ = ["bot_factory", "fake_discord", "slack", "start_slack"]
