"""The ``parley`` CLI as a user runs it: real Redis, the fake OpenAI server; in-process (``tests/cli.py``) but
for one real process (the first chat) and the import check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bots.cli import PLATFORM_NAMES
from bots.cli_commands import PLATFORMS
from tests.cli import ROOT, parley, parley_process
from tests.fakes.openai_server import FakeOpenAI, Reply


def llm_env(fake: FakeOpenAI, redis_url: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODEL": "fake-model",
        "REDIS_URL": redis_url,
    }


@pytest.mark.slow
async def test_scripted_chat_prints_one_json_reply_per_line_and_remembers(
    fake_openai: FakeOpenAI, redis_url: str
) -> None:
    code, out, err = await parley_process(
        "chat",
        "--bot",
        "arcade",
        "--jsonl",
        "--user",
        "alice",
        stdin="hello there\n/help\n\nmy cat is Tom\n",
        env=llm_env(fake_openai, redis_url),
    )
    assert code == 0, err
    replies = [json.loads(line) for line in out.splitlines()]
    assert [r["kind"] for r in replies] == ["answer", "command", "answer"]
    assert replies[0]["reply"] == "You said: hello there" and replies[0]["persona"] == "host"
    assert replies[0]["usage"]["completion_tokens"] > 0
    # a second run (in-process), the same user: memory survived the restart
    code, out, _ = await parley(
        "chat",
        "--bot",
        "arcade",
        "--jsonl",
        "--user",
        "alice",
        stdin="what is my cat called?\n",
        env=llm_env(fake_openai, redis_url),
    )
    assert code == 0
    contents = [m["content"] for m in fake_openai.chat_requests[-1].body["messages"]]
    assert "my cat is Tom" in contents
    # another user has another conversation
    await parley(
        "chat",
        "--bot",
        "arcade",
        "--jsonl",
        "--user",
        "bob",
        stdin="hi\n",
        env=llm_env(fake_openai, redis_url),
    )
    contents = [m["content"] for m in fake_openai.chat_requests[-1].body["messages"]]
    assert "my cat is Tom" not in contents


async def test_plain_scripted_chat_streams_text(fake_openai: FakeOpenAI, redis_url: str) -> None:
    fake_openai.queue(Reply("Arr, a fine day!", chunk_chars=2))
    code, out, err = await parley(
        "chat",
        "--bot",
        "support",
        stdin="How do returns and refunds work?\n",
        # Its orders MCP server (a process of its own, seconds to start) plays no part in this answer.
        env={**llm_env(fake_openai, redis_url), "PARLEY_MCP": "false"},
    )
    assert code == 0, err
    assert out == "Arr, a fine day!\n"
    system = fake_openai.chat_requests[0].body["messages"][0]["content"]
    assert "customer-support assistant" in system
    reference = fake_openai.chat_requests[0].body["messages"][-3]["content"]
    # No index published: knowledge.md is a one-document knowledge base, its matching section numbered [1].
    assert (
        "<reference>" in reference
        and "[1] Example Co. customer FAQ (sample: replace with your company's own) › Returns and refunds"
        in reference
    )


async def test_no_llm_configured_names_both_variables(redis_url: str) -> None:
    code, _, err = await parley("chat", "--bot", "arcade", stdin="hi\n", env={"REDIS_URL": redis_url})
    assert code == 2
    assert "OPENAI_API_KEY" in err and "OPENAI_BASE_URL" in err and "Ollama" in err
    assert len(err.strip().splitlines()) == 1


async def test_bad_bot_config_names_the_field_and_exits_non_zero(tmp_path: Path, redis_url: str) -> None:
    bot = tmp_path / "mybot"
    (bot / "personas").mkdir(parents=True)
    (bot / "bot.toml").write_text('name = "mybot"\ndefault_persona = "p"\n[memory]\nmax_messages = "lots"\n')
    code, _, err = await parley(
        "chat", "--bot", str(bot), env={"REDIS_URL": redis_url, "OPENAI_API_KEY": "x"}
    )
    assert code == 2 and "memory.max_messages" in err
    (bot / "bot.toml").write_text('name = "mybot"\ndefault_persona = "p"\n')
    (bot / "personas" / "p.toml").write_text('name = "p"\nsystem_prompt = "hi"\ntemperature = 7\n')
    code, _, err = await parley(
        "chat", "--bot", str(bot), env={"REDIS_URL": redis_url, "OPENAI_API_KEY": "x"}
    )
    assert code == 2 and "persona.temperature" in err and "p.toml" in err
    code, _, err = await parley("chat", "--bot", "nosuchbot", env={"OPENAI_API_KEY": "x"})
    assert code == 2 and "arcade" in err and "support" in err


async def test_bad_settings_name_the_variable_and_never_echo_secrets(redis_url: str) -> None:
    env = {
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": "sk-supersecretvalue",
        "PORT": "not-a-port",
        "PARLEY_LLM_TOTAL_TIMEOUT": "-5",
    }
    code, out, err = await parley("chat", "--bot", "arcade", env=env)
    assert code == 2
    assert "PORT" in err and "PARLEY_LLM_TOTAL_TIMEOUT" in err
    assert "sk-supersecretvalue" not in err + out and "not-a-port" not in err


async def test_unreachable_redis_is_one_clear_line_and_exit_3(fake_openai: FakeOpenAI) -> None:
    env = llm_env(fake_openai, "redis://:hunter2@127.0.0.1:1/0")
    code, _, err = await parley("chat", "--bot", "arcade", stdin="hi\n", env=env)
    assert code == 3
    assert "cannot reach Redis" in err and "hunter2" not in err


async def test_check_reports_each_problem(fake_openai: FakeOpenAI, redis_url: str, tmp_path: Path) -> None:
    bot = tmp_path / "quiet"
    (bot / "personas").mkdir(parents=True)
    (bot / "bot.toml").write_text('name = "quiet"\ndefault_persona = "p"\nplatforms = []\n')
    (bot / "personas" / "p.toml").write_text('name = "p"\nsystem_prompt = "hi"\n')
    code, out, err = await parley("check", "--bot", str(bot), env=llm_env(fake_openai, redis_url))
    assert code == 0, err
    assert "redis: ok" in out and "llm: ok" in out
    code, out, err = await parley("check", "--bot", "arcade", env={"REDIS_URL": redis_url})
    assert code == 1 and "redis: ok" in out
    assert "OPENAI_BASE_URL" in err and "DISCORD_TOKEN" in err  # one line per problem


async def test_message_bodies_never_reach_info_logs(fake_openai: FakeOpenAI, redis_url: str) -> None:
    fake_openai.queue(Reply("the reply body PINEAPPLE"))
    code, _out, err = await parley(
        "chat",
        "--bot",
        "arcade",
        "--jsonl",
        stdin="my secret body MANGO\n",
        env={**llm_env(fake_openai, redis_url), "PARLEY_LOG_LEVEL": "INFO"},
    )
    assert code == 0
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line["event"] == "turn_done" for line in lines)
    assert "MANGO" not in err and "PINEAPPLE" not in err and "sk-test" not in err
    assert all("conversation" in line and "turn_id" in line for line in lines if line["event"] == "turn_done")


def test_help_loads_no_engine_openai_adapter_or_kb() -> None:
    """``parley --help`` (and a usage error) answer before the heavy imports: they happen per command."""
    heavy = ("openai", "core.engine", "core.runtime", "core.kb", "adapters", "discord", "slack_bolt")
    probe = (
        "import sys, bots.cli; bots.cli._parser(); "
        f"print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_the_parsers_platforms_are_the_loadable_ones() -> None:
    assert sorted(PLATFORMS) == sorted(PLATFORM_NAMES)
