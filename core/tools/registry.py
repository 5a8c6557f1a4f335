"""One registry for a bot's tools: Python functions and MCP servers' tools, with least-privilege filters.

A turn sees a tool only if the bot's ``allow`` list (empty: all) and the channel's list (if it has one) name
it, and, for admin-only tools, if its author is an admin. :meth:`ToolRegistry.check` repeats the same test
at call time, so a call for a tool the turn was not offered is denied, never run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError
from core.tools.config import ToolsConfig
from core.tools.spec import Tool, ToolSpec
from core.types import Turn

if TYPE_CHECKING:
    from core.tools.mcp import MCPConnection


class ToolRegistry:
    def __init__(self, config: ToolsConfig | None = None, tools: Iterable[Tool] = ()) -> None:
        self.config = config or ToolsConfig()
        self._local: dict[str, Tool] = {}
        self.servers: list[MCPConnection] = []
        if self.config.mcp:  # the MCP SDK is imported only by bots that use it
            from core.tools.mcp import MCPConnection

            timeout = self.config.timeout_seconds
            self.servers = [MCPConnection(s, call_timeout=timeout) for s in self.config.mcp]
        self._stack: AsyncExitStack | None = None
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.spec.name in self._local:
            raise ConfigError(f"tools: two tools are named {tool.spec.name!r}")
        self._local[tool.spec.name] = tool

    # -- lifecycle: MCP servers start and stop with the bot

    async def __aenter__(self) -> ToolRegistry:
        async with AsyncExitStack() as stack:
            for server in self.servers:
                await stack.enter_async_context(server)
            # Wait for the first connections together; a server still down keeps retrying in the background.
            await asyncio.gather(*(s.wait_ready() for s in self.servers))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    # -- lookup

    def all(self) -> dict[str, Tool]:
        found: dict[str, Tool] = {}
        for server in self.servers:
            for tool in server.tools():
                found[tool.spec.name] = tool
        found.update(self._local)  # a bot's own function wins over a same-named remote tool
        return found

    def get(self, name: str) -> Tool | None:
        return self.all().get(name)

    def _channel_list(self, turn: Turn) -> list[str] | None:
        place = turn.place
        for key in (f"{place.platform}:{place.channel}", place.channel):
            if key in self.config.channels:
                return self.config.channels[key]
        return None

    def denial(self, spec: ToolSpec, turn: Turn) -> str:
        """'' when ``turn`` may use the tool, else why not (said to the model, logged, audited)."""
        if not self.config.enabled:
            return "tools are switched off for this bot"
        if self.config.allow and spec.name not in self.config.allow:
            return "this bot may not use that tool"
        channel = self._channel_list(turn)
        if channel is not None and spec.name not in channel:
            return "that tool is not allowed in this channel"
        if spec.admin_only and not turn.author.is_admin:
            return "only admins may use that tool"
        return ""

    def available(self, turn: Turn) -> list[ToolSpec]:
        return [t.spec for t in self.all().values() if not self.denial(t.spec, turn)]

    def openai_tools(self, turn: Turn) -> list[dict[str, Any]]:
        return [spec.openai() for spec in sorted(self.available(turn), key=lambda s: s.name)]

    async def status(self) -> list[tuple[str, str]]:
        """(server, '' or the problem) for each MCP server, probed now."""
        return [(s.name, await s.probe()) for s in self.servers]
