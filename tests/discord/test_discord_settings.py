"""Discord settings (env over bot.toml, errors that never echo secrets) and the arcade bot's content."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.discord.adapter import backoff_delay, build_intents
from adapters.discord.commands import command_definitions
from adapters.discord.settings import DEFAULT_API_URL, load_discord_settings
from bots.loader import load_bot
from core.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("DISCORD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env from a developer's checkout


def test_defaults_are_safe() -> None:
    s = load_discord_settings({})
    assert s.token is None
    assert s.api_url == DEFAULT_API_URL
    assert not s.api_overridden
    assert not s.wants_message_content
    intents = build_intents(s)
    assert intents.guilds and intents.guild_messages and intents.dm_messages
    assert not intents.message_content and not intents.members and not intents.presences


def test_environment_overrides_the_bot_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_OPEN_THREADS", "false")
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "4")
    monkeypatch.setenv("DISCORD_SHARD_IDS", "2, 3")
    monkeypatch.setenv("DISCORD_API_URL", "http://proxy.internal:8080/api/v10/")
    s = load_discord_settings({"open_threads": True, "listen_channels": [1, 2]})
    assert not s.open_threads
    assert s.shard_count == 4
    assert s.shard_ids == {2, 3}
    assert s.api_url == "http://proxy.internal:8080/api/v10"
    assert s.api_overridden
    assert s.listen_channels == {1, 2}
    assert s.wants_message_content  # listening to channels needs the content intent
    assert build_intents(s).message_content


def test_moderators_channel_from_bot_toml_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_discord_settings({}).moderators_channel_id is None  # unset: flags are only logged
    assert load_discord_settings({"moderators_channel_id": 111}).moderators_channel_id == 111
    monkeypatch.setenv("DISCORD_MODERATORS_CHANNEL_ID", "222")
    assert load_discord_settings({"moderators_channel_id": 111}).moderators_channel_id == 222
    monkeypatch.setenv("DISCORD_MODERATORS_CHANNEL_ID", "#mods")
    with pytest.raises(ConfigError, match="DISCORD_MODERATORS_CHANNEL_ID"):
        load_discord_settings({})


def test_token_must_not_live_in_bot_toml() -> None:
    with pytest.raises(ConfigError, match="DISCORD_TOKEN"):
        load_discord_settings({"token": "abc"})


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ConfigError, match="open_thread"):
        load_discord_settings({"open_thread": True})


def test_shard_ids_need_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_SHARD_IDS", "0,1")
    with pytest.raises(ConfigError, match="DISCORD_SHARD_COUNT"):
        load_discord_settings({})
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "1")
    with pytest.raises(ConfigError, match="below DISCORD_SHARD_COUNT"):
        load_discord_settings({})


def test_errors_name_the_variable_and_never_echo_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "super-secret-token")
    monkeypatch.setenv("DISCORD_EDIT_INTERVAL", "fast")
    with pytest.raises(ConfigError) as info:
        load_discord_settings({})
    assert "DISCORD_EDIT_INTERVAL" in str(info.value)
    assert "fast" not in str(info.value)
    assert "super-secret-token" not in str(info.value)
    monkeypatch.setenv("DISCORD_EDIT_INTERVAL", "1.5")
    assert "super-secret-token" not in repr(load_discord_settings({}))


def test_backoff_grows_exponentially_and_is_capped() -> None:
    low = [backoff_delay(n, 2.0, 600.0, rng=lambda: 0.0) for n in range(1, 12)]
    high = [backoff_delay(n, 2.0, 600.0, rng=lambda: 1.0) for n in range(1, 12)]
    assert backoff_delay(0, 2.0, 600.0) == 0.0
    assert high[:4] == [2.0, 4.0, 8.0, 16.0]
    assert low[:4] == [1.0, 2.0, 4.0, 8.0]  # jitter keeps at least half
    assert max(high) == 600.0


def test_the_arcade_bot_has_characterful_personas_and_a_story_switch() -> None:
    bot = load_bot("arcade")
    assert {"host", "pirate", "storyteller", "dungeonmaster", "detective", "oracle"} <= set(bot.personas)
    for persona in bot.personas.values():
        prompt = persona.render_system(
            {"bot_name": "Arcade", "user_name": "Ada", "date": "today", "persona": "x", "platform": "discord"}
        )
        assert "{" not in prompt.replace("{{", "")
        assert "@everyone" in prompt or "@-mentions" in prompt  # every persona is told never to ping
        assert persona.greeting and persona.refusal and persona.error
    settings = load_discord_settings(bot.platform_config("discord"))
    assert settings.ignore_bots
    assert bot.plugin is not None
    (story,) = [c for c in bot.plugin.commands() if c.name == "story"]
    (definition,) = command_definitions([story])
    options = {o["name"]: o["type"] for o in definition["options"]}
    assert options == {"prompt": 3, "genre": 3, "length": 3, "continue": 5, "narrate": 5}
