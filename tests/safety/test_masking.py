"""Issue 20, findings 5 and 10: secrets masked by structure at any depth (env maps, headers, URL userinfo)
in the console's settings page, ``parley check``, logs and errors; one masking function in core."""

from __future__ import annotations

import json

from pydantic import BaseModel, SecretStr

from core.safety.logs import redact_log_event
from core.safety.mask import mask_text, mask_url, masked_settings
from core.tools.config import MCPServerConfig, ToolsConfig
from tests.cli import parley
from tests.core.test_cli import llm_env
from tests.fakes.openai_server import FakeOpenAI

SECRET = "sk-live-9d8c7b6a5f4e3d2c"
PASSWORD = "hunter2-correct-horse"


def test_urls_lose_their_password_and_secret_query_values() -> None:
    assert (
        mask_url(f"http://bob:{PASSWORD}@llm.internal:8080/v1") == "http://bob:********@llm.internal:8080/v1"
    )
    assert mask_url(f"https://{SECRET}@api.example.com/") == "https://********@api.example.com/"
    assert (
        mask_url("https://h.example/cb?token=abc123&page=2") == "https://h.example/cb?token=********&page=2"
    )
    assert mask_url("https://slack.com/api/") == "https://slack.com/api/"
    text = f"cannot reach http://u:{PASSWORD}@10.0.0.5:9/v1 (ConnectError); redis://:{PASSWORD}@r:6379/0 too"
    assert PASSWORD not in mask_text(text)
    assert "http://u:********@10.0.0.5:9/v1" in mask_text(text)


class Nested(BaseModel):
    url: str = f"postgres://app:{PASSWORD}@db/app"
    extra: dict[str, object] = {"headers": {"X-Custom": SECRET}, "list": [{"auth": "Bearer " + SECRET}]}


def test_the_console_settings_mask_env_maps_headers_and_lists_at_any_depth() -> None:
    tools = ToolsConfig(
        mcp=[
            MCPServerConfig(name="crm", command="crm-mcp", env={"CRM_API_KEY": SECRET, "REGION": "eu"}),
            MCPServerConfig(name="remote", url=f"https://u:{PASSWORD}@mcp.example/sse"),
        ]
    )
    flat = masked_settings({"tools": tools, "nested": Nested(), "plain": SecretStr(SECRET)})
    dumped = json.dumps(flat)
    assert SECRET not in dumped and PASSWORD not in dumped, dumped
    assert flat["tools.mcp[0].env.CRM_API_KEY"] == "********"
    assert flat["tools.mcp[0].env.REGION"] == "********"  # an env map's values are all masked
    assert flat["tools.mcp[0].name"] == "crm"
    assert flat["tools.mcp[1].url"] == "https://u:********@mcp.example/sse"


def test_log_lines_lose_url_passwords_and_secrets_in_nested_fields() -> None:
    event = {
        "event": "upstream_failed",
        "detail": f"cannot reach http://a:{PASSWORD}@h/v1",
        "config": {"env": {"CRM": SECRET}, "headers": {"Authorization": "Bearer " + SECRET}},
    }
    out = json.dumps(redact_log_event(None, "warning", event))
    assert PASSWORD not in out and SECRET not in out, out
    assert "http://a:********@h/v1" in out


async def test_check_never_prints_url_passwords_and_survives_userinfo_in_slack_api_url(
    fake_openai: FakeOpenAI, redis_url: str
) -> None:
    env = llm_env(fake_openai, redis_url)
    # A dead port with credentials in it: the probe fails, and the failure names the URL.
    env["OPENAI_BASE_URL"] = f"http://bob:{PASSWORD}@127.0.0.1:9/v1"
    env["SLACK_API_URL"] = f"http://bob:{PASSWORD}@127.0.0.1:9/api/"
    env["SLACK_BOT_TOKEN"] = "xoxb-1-2-abc"
    env["SLACK_SIGNING_SECRET"] = "s3cr3t"
    code, out, err = await parley("check", "--bot", "support", env=env, limit=90)
    assert PASSWORD not in out + err, out + err
    assert "Traceback" not in err, err
    assert "bob:********@127.0.0.1:9" in err
    assert code == 1
