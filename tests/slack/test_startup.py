"""Start-up: mode from credentials, loud one-line failures, no secrets in messages, the app manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import adapters.slack as slack_adapter
from adapters.common.deps import EdgeDeps
from adapters.slack.settings import BOT_SCOPES, Mode, choose_mode, load_slack_settings
from core.errors import ConfigError
from tests.conftest import RuntimeFactory
from tests.fakes.slack import FakeSlack
from tests.slack.conftest import StartSlack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "SLACK_CLIENT_ID",
        "SLACK_CLIENT_SECRET",
        "SLACK_API_URL",
        "SLACK_MODE",
        "PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env from the developer's checkout


def _mode(**values: Any) -> Mode:
    base: dict[str, Any] = {
        "slack_bot_token": None,
        "slack_signing_secret": None,
        "slack_app_token": None,
        "slack_client_id": None,
        "slack_client_secret": None,
    }
    base.update(values)
    return choose_mode(load_slack_settings(_env_file=None, **base))


def test_modes_from_credentials() -> None:
    assert _mode(slack_app_token="xapp-1", slack_bot_token="xoxb-1") is Mode.SOCKET
    assert _mode(slack_signing_secret="s", slack_bot_token="xoxb-1") is Mode.HTTP
    assert _mode(slack_signing_secret="s", slack_client_id="1.2", slack_client_secret="c") is Mode.OAUTH
    assert (
        _mode(slack_app_token="xapp-1", slack_bot_token="xoxb-1", slack_signing_secret="s", slack_mode="http")
        is Mode.HTTP
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "SLACK_APP_TOKEN + SLACK_BOT_TOKEN"),
        ({"slack_app_token": "xapp-1"}, "SLACK_BOT_TOKEN"),
        ({"slack_app_token": "xoxb-wrong-kind", "slack_bot_token": "xoxb-1"}, "xapp-"),
        ({"slack_signing_secret": "s"}, "SLACK_CLIENT_ID/SECRET"),
        ({"slack_signing_secret": "s", "slack_bot_token": "xapp-1"}, "xoxb-"),
        ({"slack_signing_secret": "s", "slack_client_id": "1.2"}, "go together"),
        ({"slack_mode": "socket", "slack_bot_token": "xoxb-1"}, "SLACK_APP_TOKEN"),
    ],
)
def test_bad_credentials_fail_in_one_line(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _mode(**values)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_setting_does_not_echo_secrets() -> None:
    with pytest.raises(ConfigError) as info:
        load_slack_settings(_env_file=None, slack_bot_token="xoxb-super-secret", slack_mode="sideways")
    assert "SLACK_MODE" in str(info.value)
    assert "super-secret" not in str(info.value)


async def test_rejected_bot_token_stops_start_up(start_slack: StartSlack, slack: FakeSlack) -> None:
    with pytest.raises(ConfigError) as info:
        await start_slack(slack_bot_token="xoxb-revoked-secret")
    assert str(info.value) == "SLACK_BOT_TOKEN was rejected by Slack (invalid_auth)"


async def test_rejected_app_token_stops_start_up(start_slack: StartSlack, slack: FakeSlack) -> None:
    with pytest.raises(ConfigError) as info:
        await start_slack(slack_app_token="xapp-1-wrong", slack_signing_secret=None)
    assert "SLACK_APP_TOKEN was rejected" in str(info.value)
    assert "wrong" not in str(info.value)


async def test_build_adapter_and_check_from_the_environment(
    clean_env: None, runtime_factory: RuntimeFactory, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with runtime_factory("support") as rt:
        deps = EdgeDeps.of(rt)
        problems = await slack_adapter.check(deps, slack_adapter.load_settings(rt.bot))
        assert len(problems) == 1
        assert problems[0].startswith("slack: Slack needs credentials")

        monkeypatch.setenv("SLACK_BOT_TOKEN", slack.bot_token)
        monkeypatch.setenv("SLACK_SIGNING_SECRET", "s3cret")
        monkeypatch.setenv("SLACK_API_URL", slack.api_url)
        setup = slack_adapter.load_settings(rt.bot)  # read once, after the environment changed
        assert await slack_adapter.check(deps, setup) == []
        adapter = slack_adapter.build_adapter(deps, setup, slack_adapter.build_delivery(deps, setup))
        assert adapter.mode is Mode.HTTP
        assert "/resume" in adapter.commands  # the support plugin's command is exposed
        await adapter.aclose()


def test_manifest_matches_the_adapter() -> None:
    manifest = yaml.safe_load((ROOT / "deploy/slack/manifest.yaml").read_text(encoding="utf-8"))
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == sorted(BOT_SCOPES)
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.im", "message.channels", "assistant_thread_started"} <= events
    commands = {c["command"] for c in manifest["features"]["slash_commands"]}
    assert commands == {"/help", "/reset", "/persona", "/story", "/resume"}
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_empty_values_from_env_example_mean_unset(clean_env: None, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text(encoding="utf-8"), encoding="utf-8")
    settings = load_slack_settings()  # reads ./.env: the copied example, Slack values left empty
    assert settings.slack_bot_token is None
    assert settings.slack_app_token is None
    assert settings.slack_api_url == "https://slack.com/api/"
    with pytest.raises(ConfigError, match="Slack needs credentials"):
        choose_mode(settings)
