"""Settings read once (core/appsettings.py): the CLI builds one AppSettings and passes it down; nothing below
it reads the environment again, a bad value in any area names its variable and exits 2, and the runtime
refuses to be built from the process settings alone."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from bots.loader import load_bot
from core.appsettings import load_app_settings
from core.errors import ConfigError
from core.runtime import open_runtime
from tests.cli import parley
from tests.conftest import make_settings
from tests.core.test_cli import llm_env
from tests.fakes.openai_server import FakeOpenAI

CORE_AREAS = {"Settings", "SafetySettings", "ConsoleSettings", "EmbeddingSettings"}


@pytest.fixture
def constructed(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each settings class is built (each build reads the environment and .env)."""
    made: Counter[str] = Counter()
    original = BaseSettings.__init__

    def counting(self: BaseSettings, *args: Any, **kwargs: Any) -> None:
        made[type(self).__name__] += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(BaseSettings, "__init__", counting)
    return made


async def test_parley_chat_reads_each_settings_class_once(
    constructed: Counter[str], fake_openai: FakeOpenAI, redis_url: str
) -> None:
    # support has a knowledge base (embeddings settings), a console table and a Slack platform.
    env = {**llm_env(fake_openai, redis_url), "PARLEY_MCP": "false", "EMBEDDINGS_LOCAL": "false"}
    code, _out, err = await parley("chat", "--bot", "support", "--jsonl", stdin="hello\n", env=env)
    assert code == 0, err
    assert set(constructed) == CORE_AREAS  # chat connects to no platform: no platform settings read
    assert all(n == 1 for n in constructed.values()), constructed


async def test_parley_check_reads_each_settings_class_once(
    constructed: Counter[str], fake_openai: FakeOpenAI, redis_url: str
) -> None:
    env = {**llm_env(fake_openai, redis_url), "PARLEY_MCP": "false"}
    code, _out, err = await parley("check", "--bot", "arcade", env=env)
    assert code == 1 and "DISCORD_TOKEN is not set" in err  # the platform's settings were read, and checked
    assert set(constructed) == CORE_AREAS | {"DiscordSettings"}
    assert all(n == 1 for n in constructed.values()), constructed


async def test_bad_values_in_several_areas_are_all_named_and_exit_2(redis_url: str) -> None:
    env = {
        "OPENAI_API_KEY": "x",
        "REDIS_URL": redis_url,
        "PARLEY_CONSOLE_RETENTION_DAYS": "0",
        "EMBEDDINGS_BATCH": "lots",
        "PARLEY_MODERATION_API_KEY": "sk-never-shown",
        "PARLEY_MODERATION_ENDPOINT": "maybe",
    }
    code, out, err = await parley("chat", "--bot", "arcade", stdin="hi\n", env=env)
    assert code == 2 and out == ""
    for name in ("PARLEY_CONSOLE_RETENTION_DAYS", "EMBEDDINGS_BATCH", "PARLEY_MODERATION_ENDPOINT"):
        assert name in err, err
    assert "lots" not in err and "maybe" not in err and "sk-never-shown" not in err  # names, never values


def test_load_app_settings_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("PARLEY_CONSOLE_RETENTION_DAYS", "7")
    monkeypatch.setenv("EMBEDDINGS_MODEL", "my-embedder")
    app = load_app_settings()
    assert app.console.parley_console_retention_days == 7 and app.embeddings.model == "my-embedder"
    assert dict(app.platforms) == {}  # platforms are added by the bots layer, once the bot is known
    monkeypatch.setenv("PARLEY_LOCK_LEASE", "-1")
    with pytest.raises(ConfigError, match="PARLEY_LOCK_LEASE"):
        load_app_settings()


async def test_the_runtime_refuses_the_process_settings_alone() -> None:
    with pytest.raises(TypeError, match="AppSettings"):
        async with open_runtime(load_bot("arcade"), make_settings()):  # type: ignore[arg-type]
            pass
