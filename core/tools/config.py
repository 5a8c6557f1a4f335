"""``[tools]`` in bot.toml: which tools a bot offers, where, and its MCP servers.

[tools]
allow = ["order_status", "create_ticket"]     # per-bot allow-list (empty: every registered tool)
max_rounds = 4                                # model <-> tools round trips per turn
timeout_seconds = 10                          # per tool call
[tools.channels]                              # per-channel allow-lists (id or platform:id)
"C0SUPPORT" = ["order_status"]
[[tools.mcp]]
name = "orders"
command = "{python}"                          # {python}: this interpreter
args = ["-m", "bots.support.tools"]
# url = "http://127.0.0.1:8931/mcp"           # or a streamable-HTTP server
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MCPServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    command: str = ""  # stdio: the program to start ("{python}" is this interpreter)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # set in the server's environment
    # Variables copied from the bot's environment (a stdio server otherwise sees only HOME, PATH, USER ...).
    pass_env: list[str] = Field(default_factory=list)
    cwd: str | None = None
    url: str = ""  # streamable HTTP: the endpoint, e.g. http://127.0.0.1:8931/mcp
    prefix: str = ""  # put before every tool name (two servers with the same tool names)
    read_only: list[str] = Field(default_factory=list)  # run without asking, whatever the server says
    trust_hints: bool = (
        True  # a tool the server marks readOnlyHint runs without asking (false: only read_only)
    )
    admin_only: list[str] = Field(default_factory=list)
    # Confirmations in words, per tool: { create_ticket = "Create a ticket: {subject}" } (tools/wording.py)
    confirm: dict[str, str] = Field(default_factory=dict)
    connect_timeout: float = Field(default=15.0, gt=0)
    ping_seconds: float = Field(default=30.0, gt=0)  # liveness check; a dead server is reconnected

    @model_validator(mode="after")
    def _one_transport(self) -> MCPServerConfig:
        if bool(self.command) == bool(self.url):
            raise ValueError(f"mcp server {self.name!r}: set exactly one of command (stdio) or url (HTTP)")
        return self


class ToolsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    allow: list[str] = Field(default_factory=list)
    channels: dict[str, list[str]] = Field(default_factory=dict)
    max_rounds: int = Field(default=4, ge=1, le=20)
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    max_result_chars: int = Field(default=4_000, ge=100, le=100_000)
    confirm_ttl_seconds: int = Field(default=600, ge=10, le=86_400)
    mcp: list[MCPServerConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ToolsConfig:
        names = [s.name for s in self.mcp]
        if len(names) != len(set(names)):
            raise ValueError("mcp: two servers have the same name")
        return self
