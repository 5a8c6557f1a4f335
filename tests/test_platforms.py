"""The platform contract the CLI drives: settings read once (environment over bot.toml over defaults, the
same rule on Slack and Discord), one Delivery per platform, shared with the adapter that needs it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

import adapters.discord as discord_platform
import adapters.slack as slack_platform
from adapters.common.deps import EdgeDeps
from adapters.common.platform import Platform
from bots.loader import load_bot
from core.bot import BotSpec
from tests.conftest import RuntimeFactory


@pytest.fixture(autouse=True)
def _no_platform_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("SLACK_", "DISCORD_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env from the developer's checkout


def _with_table(bot: str, platform: str, table: dict[str, Any]) -> BotSpec:
    spec = load_bot(bot)
    return dataclasses.replace(spec, config=spec.config.model_copy(update={platform: table}))


def test_slack_environment_over_bot_toml_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert slack_platform.load_settings(_with_table("support", "slack", {})).config.moderators_channel == ""
    spec = _with_table("support", "slack", {"moderators_channel": "C0TOML", "handoff_channel": "C0HAND"})
    setup = slack_platform.load_settings(spec)
    assert (setup.config.moderators_channel, setup.config.handoff_channel) == ("C0TOML", "C0HAND")
    monkeypatch.setenv("SLACK_MODERATORS_CHANNEL", "C0ENV")
    setup = slack_platform.load_settings(spec)
    assert (setup.config.moderators_channel, setup.config.handoff_channel) == ("C0ENV", "C0HAND")


def test_discord_environment_over_bot_toml_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert discord_platform.load_settings(_with_table("arcade", "discord", {})).moderators_channel_id is None
    spec = _with_table("arcade", "discord", {"moderators_channel_id": 111, "edit_interval": 2.5})
    settings = discord_platform.load_settings(spec)
    assert (settings.moderators_channel_id, settings.edit_interval) == (111, 2.5)
    monkeypatch.setenv("DISCORD_MODERATORS_CHANNEL_ID", "222")
    settings = discord_platform.load_settings(spec)
    assert (settings.moderators_channel_id, settings.edit_interval) == (222, 2.5)


async def test_a_platform_builds_one_delivery_and_its_adapter_shares_it(
    runtime_factory: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s3cret")
    monkeypatch.setenv("SLACK_MODERATORS_CHANNEL", "C0ENV")
    async with runtime_factory("support", port=0, parley_ops_host="127.0.0.1") as rt:
        platform = Platform("slack", slack_platform, rt.bot)
        monkeypatch.setenv("SLACK_MODERATORS_CHANNEL", "C0LATER")  # read once: a later change is not seen
        deps = EdgeDeps.of(rt)
        delivery = platform.delivery(deps)
        assert platform.delivery(deps) is delivery
        adapter = platform.adapter(deps)
        try:
            assert isinstance(adapter, slack_platform.SlackAdapter)
            assert adapter.delivery is delivery
            assert delivery.moderators_channel() == "C0ENV"
        finally:
            await adapter.aclose()
            await delivery.aclose()
