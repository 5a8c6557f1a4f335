"""MCP servers as tools, through the official ``mcp`` SDK (stdio subprocesses or streamable HTTP).

Each :class:`MCPConnection` owns one background task that enters the SDK's ``Client`` (the SDK's anyio
scopes must be entered and left by the same task), lists the tools, then pings the server every
``ping_seconds`` (a fresh ``tools/list``: the 2026 protocol has no ping, and this also picks up changed
tools). When the server dies (a failed ping or a broken call), the task leaves the client
(ending a stdio subprocess) and connects again with backoff; calls meanwhile fail fast with
:class:`ToolUnavailable`, which the model is told. ``aclose`` stops the task and the server.

A tool is side-effecting unless the server marks it ``readOnlyHint`` (and ``trust_hints`` is on) or the
bot's config lists it in ``read_only``: least privilege when in doubt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping
from typing import Any

import structlog
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from core.errors import ToolError, ToolTimeout, ToolUnavailable
from core.tasks import wait_event
from core.tools.config import MCPServerConfig
from core.tools.spec import ToolContext, ToolSpec

log = structlog.get_logger("parley.tools.mcp")

BACKOFF_MAX = 30.0


def _target(cfg: MCPServerConfig) -> StdioServerParameters | str:
    if cfg.url:
        return cfg.url
    command = sys.executable if cfg.command == "{python}" else cfg.command
    # pass_env is read when the server starts, like a container's --env NAME: the operator named them.
    env = {name: os.environ[name] for name in cfg.pass_env if name in os.environ} | dict(cfg.env)
    return StdioServerParameters(command=command, args=list(cfg.args), env=env or None, cwd=cfg.cwd)


def _result_text(result: Any) -> str:
    parts: list[str] = []
    for block in result.content:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')} omitted]")
    if not parts and result.structured_content is not None:
        parts.append(str(result.structured_content))
    return "\n".join(parts)


class MCPTool:
    def __init__(self, connection: MCPConnection, remote_name: str, spec: ToolSpec) -> None:
        self.connection = connection
        self.remote_name = remote_name
        self.spec = spec

    async def call(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        return await self.connection.call(self.remote_name, dict(arguments))


class MCPConnection:
    def __init__(self, cfg: MCPServerConfig, *, call_timeout: float = 10.0) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._call_timeout = call_timeout
        self._client: Client | None = None
        self._tools: dict[str, MCPTool] = {}
        self._ready = asyncio.Event()  # set while connected
        self._broken = asyncio.Event()  # a call found the server dead: reconnect now
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error = ""
        self.connects = 0  # how many times a session was established (tests watch reconnects)
        self._log = log.bind(server=cfg.name)

    # -- lifecycle (an async context manager with an idempotent aclose)

    async def start(self) -> MCPConnection:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mcp:{self.name}")
        return self

    async def wait_ready(self, seconds: float | None = None) -> bool:
        return await wait_event(self._ready, seconds or self.cfg.connect_timeout)

    async def aclose(self) -> None:
        self._stop.set()
        self._broken.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                async with asyncio.timeout(5.0):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def __aenter__(self) -> MCPConnection:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def tools(self) -> list[MCPTool]:
        return list(self._tools.values())

    # -- the owned task

    async def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                async with Client(_target(self.cfg), read_timeout_seconds=self.cfg.connect_timeout) as client:
                    await self._relist(client, self.cfg.connect_timeout)
                    self._client = client
                    self.connects += 1
                    self.last_error = ""
                    delay = 0.5
                    self._broken.clear()
                    self._ready.set()
                    self._log.info("mcp_connected", tools=sorted(self._tools))
                    await self._watch(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # task boundary: the server failed to start or died; try again
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                self._log.warning("mcp_unavailable", error=self.last_error, retry_in=delay)
            finally:
                self._ready.clear()
                self._client = None
            if self._stop.is_set():
                return
            await wait_event(self._stop, delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _watch(self, client: Client) -> None:
        """Return when the server should be reconnected (or we are stopping)."""
        while not self._stop.is_set():
            await wait_event(self._broken, self.cfg.ping_seconds)
            if self._stop.is_set():
                return
            try:
                await self._relist(client, min(self.cfg.connect_timeout, 5.0))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"ping failed: {type(exc).__name__}"
                self._log.warning("mcp_ping_failed", error=self.last_error)
                return
            self._broken.clear()

    async def _relist(self, client: Client, seconds: float) -> None:
        async with asyncio.timeout(seconds):
            listing = await client.list_tools(cache_mode="refresh")
        self._tools = {f"{self.cfg.prefix}{t.name}": self._wrap(t) for t in listing.tools}

    def _wrap(self, tool: Any) -> MCPTool:
        name = f"{self.cfg.prefix}{tool.name}"
        hints = tool.annotations
        hinted = bool(hints is not None and hints.read_only_hint) and self.cfg.trust_hints
        read_only = hinted or name in self.cfg.read_only or tool.name in self.cfg.read_only
        spec = ToolSpec(
            name=name,
            description=(tool.description or "").strip()[:1024],
            parameters=tool.input_schema or {"type": "object", "properties": {}},
            side_effects=not read_only,
            admin_only=name in self.cfg.admin_only or tool.name in self.cfg.admin_only,
            source=f"mcp:{self.name}",
            confirm=self.cfg.confirm.get(tool.name, ""),
        )
        return MCPTool(self, tool.name, spec)

    # -- calls

    async def call(self, remote_name: str, arguments: dict[str, Any], seconds: float | None = None) -> str:
        client = self._client
        if client is None or not self._ready.is_set():
            raise ToolUnavailable(f"the {self.name} tool server is not connected (reconnecting)")
        seconds = seconds or self._call_timeout
        try:
            async with asyncio.timeout(seconds):
                result = await client.call_tool(remote_name, arguments)
        except TimeoutError:
            raise ToolTimeout(f"{remote_name} did not answer within {seconds:g}s") from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the SDK's errors: a broken pipe, a closed stream, an MCP error
            if not self._stop.is_set():
                self._broken.set()  # the watcher pings now and reconnects if the server is gone
            raise ToolError(f"{remote_name} failed: {type(exc).__name__}") from exc
        text = _result_text(result)
        if result.is_error:
            raise ToolError(f"{remote_name} reported an error: {text[:300]}")
        return text

    async def probe(self) -> str:
        """'' when the server answers a ping now, else why not (for ``parley check``)."""
        client = self._client
        if client is None:
            return self.last_error or "not connected"
        try:
            await self._relist(client, 5.0)
        except Exception as exc:  # any failure means "does not answer"; say which
            return f"does not answer: {type(exc).__name__}"
        return ""
