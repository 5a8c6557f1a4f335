"""``parley check`` lists each tool and says whether each MCP server answers (a real process)."""

from __future__ import annotations

from pathlib import Path

from tests.cli import parley
from tests.core.test_cli import llm_env
from tests.fakes.openai_server import FakeOpenAI


async def test_check_lists_support_tools_and_its_mcp_server(fake_openai: FakeOpenAI, redis_url: str) -> None:
    _code, out, err = await parley("check", "--bot", "support", env=llm_env(fake_openai, redis_url), limit=90)
    assert "tool order_status: read-only, mcp:orders" in out, err
    assert "tool create_ticket: asks first, mcp:orders" in out
    assert "tool handoff: asks first, python" in out
    assert "mcp server orders: ok (2 tools)" in out
    assert "mcp server" not in err  # no MCP problem (Slack credentials are missing, that is another line)


async def test_check_names_a_dead_mcp_server_and_an_unknown_tool(
    fake_openai: FakeOpenAI, redis_url: str, tmp_path: Path
) -> None:
    bot = tmp_path / "toolish"
    (bot / "personas").mkdir(parents=True)
    (bot / "bot.toml").write_text(
        'name = "toolish"\ndefault_persona = "p"\nplatforms = []\n'
        '[tools]\nallow = ["roll", "ghost_tool"]\n'
        '[[tools.mcp]]\nname = "gone"\ncommand = "/nonexistent/mcp-server"\nconnect_timeout = 1\n'
    )
    (bot / "personas" / "p.toml").write_text('name = "p"\nsystem_prompt = "hi"\n')
    code, _out, err = await parley("check", "--bot", str(bot), env=llm_env(fake_openai, redis_url))
    assert code == 1
    assert "mcp server gone:" in err
    assert "tools.allow: no tool named 'ghost_tool'" in err


async def test_bad_tools_config_names_the_field(redis_url: str, tmp_path: Path) -> None:
    bot = tmp_path / "badtools"
    (bot / "personas").mkdir(parents=True)
    (bot / "bot.toml").write_text(
        'name = "badtools"\ndefault_persona = "p"\n[[tools.mcp]]\nname = "x"\ncommand = "a"\nurl = "http://b"\n'
    )
    (bot / "personas" / "p.toml").write_text('name = "p"\nsystem_prompt = "hi"\n')
    code, _out, err = await parley("check", "--bot", str(bot), env={"REDIS_URL": redis_url})
    assert code != 0
    assert "tools.mcp" in err
    assert "exactly one of command" in err
