"""Issue 23: what a bot author uses. ``parley new``, ``parley test`` (scripted and live), the plugin API
from any folder, ``PARLEY_BOT__*`` overrides and ``parley config``. Everything runs in-process through
``bots.cli.main``, as a person's commands would, with the real engine, a real redis-server and (live) the
real openai client against the fake OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from bots.cli import main
from bots.loader import load_bot
from bots.support.tools import build_db
from core.errors import ConfigError
from tests.fakes.openai_server import FakeOpenAI, Reply


@pytest.fixture(autouse=True)
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test in its own folder, with no .env and no override of the developer's; logging as it was
    afterwards (``main`` configures it for a stream this test's capture closes)."""
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith(("PARLEY_BOT__", "OPENAI_", "EMBEDDINGS_")) and name != "EMBEDDINGS_CACHE_DIR":
            monkeypatch.delenv(name)  # the suite's shared vector cache stays (tests/conftest.py)
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PARLEY_SUPPORT_DB", str(build_db(tmp_path / "support.db")))
    yield tmp_path
    structlog.reset_defaults()


@pytest.mark.slow
def test_new_minimal_bot_passes_its_own_tests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "mybot", "--template", "minimal"]) == 0
    assert (Path("mybot") / "plugin.py").is_file()
    assert main(["test", "--bot", "./mybot", "--junit", "report.xml"]) == 0
    out = capsys.readouterr().out
    assert "4 passed, 0 failed" in out
    suite = ET.parse("report.xml").getroot()  # noqa: S314 - our own report
    assert (suite.get("tests"), suite.get("failures")) == ("4", "0")


def test_a_broken_expectation_fails_with_a_readable_diff(capsys: pytest.CaptureFixture[str]) -> None:
    main(["new", "mybot"])
    tests = Path("mybot/tests/basics.toml")
    tests.write_text(
        tests.read_text().replace(
            'expect = { contains = "help", kind = "answer", no_calls = true }',
            'expect = { equals = "Hello! How may I help you?", kind = "answer" }',
        )
    )
    assert main(["test", "--bot", "./mybot", "--junit", "report.xml"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  tests/basics.toml::answers a greeting" in out
    assert "-Hello! How may I help you?" in out
    assert "+Hello! How can I help you today?" in out
    assert "3 passed, 1 failed" in out
    failure = ET.parse("report.xml").getroot().find("testcase/failure")  # noqa: S314 - our own report
    assert failure is not None
    assert "differs from `equals`" in (failure.get("message") or "")


def test_a_missing_model_step_names_the_turn(capsys: pytest.CaptureFixture[str]) -> None:
    main(["new", "mybot"])
    tests = Path("mybot/tests/basics.toml")
    tests.write_text(tests.read_text().replace('model = "Hello! How can I help you today?"\n', ""))
    assert main(["test", "--bot", "./mybot", "-k", "greeting"]) == 1
    assert "add a `model` step" in capsys.readouterr().out


@pytest.mark.parametrize("bot", ["support", "arcade"])
def test_shipped_bots_pass_their_conversation_tests(bot: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "--bot", bot]) == 0, capsys.readouterr().out
    assert ", 0 failed" in capsys.readouterr().out


@pytest.fixture
def fake_server() -> Iterator[tuple[str, FakeOpenAI]]:
    """The fake OpenAI-compatible server on its own loop thread (``main`` runs its own event loop)."""
    loop = asyncio.new_event_loop()
    fake = FakeOpenAI()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(fake.__aenter__())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield fake.base_url, fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_live_mode_asks_the_configured_model_and_reports_a_pass_rate(
    fake_server: tuple[str, FakeOpenAI], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url, fake = fake_server
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_MODEL", "fake-model")
    main(["new", "mybot"])
    answers = iter(["Hello! Happy to help.", "Hi, what do you need?", "Hello! Can I help?"])
    fake.responder = lambda body: Reply(next(answers))
    assert main(["test", "--bot", "./mybot", "--live", "--runs", "3", "-k", "greeting"]) == 1
    out = capsys.readouterr().out
    assert "2/3  tests/basics.toml::answers a greeting" in out  # one answer lacks "help"
    assert sum(1 for r in fake.requests if r.path.endswith("/chat/completions")) == 3
    answers = iter(["Hello! Happy to help."] * 3)
    assert (
        main(["test", "--bot", "./mybot", "--live", "--runs", "3", "--min-pass-rate", "0.6", "-k", "greet"])
        == 0
    )


def test_plugins_load_from_any_folder(tmp_path: Path) -> None:
    main(["new", "helpdesk", "--template", "support", "--dir", "elsewhere"])
    spec = load_bot("./elsewhere/helpdesk")
    assert spec.name == "helpdesk"
    assert spec.plugin is not None
    assert "resume" in {c.name for c in spec.plugin.commands()}
    assert "handoff" in {t.spec.name for t in spec.plugin.tools()}
    (tmp_path / "elsewhere/helpdesk/helpers.py").write_text("GREETING = 'from a sibling module'\n")
    plugin = tmp_path / "elsewhere/helpdesk/plugin.py"
    plugin.write_text(plugin.read_text() + "\nfrom .helpers import GREETING  # noqa: E402\n")
    assert load_bot("./elsewhere/helpdesk").plugin is not None  # relative imports work beside plugin.py


def test_a_broken_plugin_is_one_line_naming_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    main(["new", "mybot"])
    Path("mybot/plugin.py").write_text("import os\n\nraise RuntimeError('boom')\n")
    assert main(["test", "--bot", "./mybot"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "mybot/plugin.py: plugin failed to load (line 3): RuntimeError: boom" in err
    Path("mybot/plugin.py").write_text("X = 1\n")
    with pytest.raises(ConfigError, match="defines no make_plugin"):
        load_bot("./mybot")


def test_an_allowed_tool_that_nothing_provides_stops_start_up(capsys: pytest.CaptureFixture[str]) -> None:
    main(["new", "mybot"])
    Path("mybot/plugin.py").unlink()  # the plugin (and its word_count tool) gone, tools.allow unchanged
    assert main(["test", "--bot", "./mybot"]) == 2
    assert "tools.allow names 'word_count', which no tool provides" in capsys.readouterr().err


def test_environment_overrides_any_bot_toml_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_BOT__STORY__VOTE_SECONDS", "15")
    monkeypatch.setenv("PARLEY_BOT__IMAGES__USER_DAILY", "3")
    monkeypatch.setenv("PARLEY_BOT__TOOLS__ALLOW", '["roll_dice"]')
    monkeypatch.setenv("PARLEY_BOT__DISCORD__LISTEN_CHANNELS", "[123]")
    monkeypatch.setenv("PARLEY_BOT__DISPLAY_NAME", "007")  # a str field keeps the text as it is
    import os

    spec = load_bot("arcade", environ=os.environ)
    cfg = spec.config
    assert cfg.story.vote_seconds == 15
    assert cfg.images.user_daily == 3
    assert cfg.tools.allow == ["roll_dice"]
    assert cfg.discord["listen_channels"] == [123]
    assert cfg.display_name == "007"
    assert load_bot("arcade").config.story.vote_seconds == 30  # without environ: bot.toml as written
    monkeypatch.setenv("PARLEY_BOT__STORY__VOTE_SECOND", "15")
    with pytest.raises(
        ConfigError, match="PARLEY_BOT__STORY__VOTE_SECOND: story has no setting 'vote_second'"
    ):
        load_bot("arcade", environ=os.environ)
    monkeypatch.delenv("PARLEY_BOT__STORY__VOTE_SECOND")
    monkeypatch.setenv("PARLEY_BOT__STORY__VOTE_SECONDS", "-1")
    with pytest.raises(ConfigError, match=r"story\.vote_seconds"):
        load_bot("arcade", environ=os.environ)


def test_config_prints_each_value_with_its_source_and_masks_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["new", "mybot"])
    Path("mybot/bot.toml").write_text(
        Path("mybot/bot.toml").read_text()
        + '\n[[tools.mcp]]\nname = "crm"\nurl = "https://bot:hunter2@crm.example.com/mcp"\n'
        'env = { CRM_API_KEY = "sk-live-abc" }\n'
    )
    monkeypatch.setenv("PARLEY_BOT__LIMITS__MAX_INPUT_CHARS", "2000")
    capsys.readouterr()
    assert main(["config", "--bot", "./mybot", "--json"]) == 0
    shown = capsys.readouterr().out
    rows = json.loads(shown)
    assert rows["limits.max_input_chars"] == {
        "value": 2000,
        "source": "env PARLEY_BOT__LIMITS__MAX_INPUT_CHARS",
    }
    assert rows["moderation.profile"]["source"] == "bot.toml"
    assert rows["memory.ttl_days"]["source"] == "default"
    assert rows["limits.user_daily_tokens"]["value"] == 200_000  # "tokens" is no secret
    assert "hunter2" not in shown
    assert "sk-live-abc" not in shown
    assert rows["tools.mcp"]["value"][0]["url"] == "https://********@crm.example.com/mcp"
