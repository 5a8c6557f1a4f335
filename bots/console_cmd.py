"""``parley console --bot NAME``: serve only the operator console, for a local look at a bot's data; and
``parley console user add|list|remove``: the console's accounts.

It opens the bot's runtime (REDIS_URL, or the embedded redis-server under PARLEY_DATA_DIR as ``parley chat``
does), connects to no platform and answers no turn; it needs no LLM. ``parley run`` serves the same console
beside the bot when PARLEY_CONSOLE_PASSWORD (or PARLEY_CONSOLE_ACCOUNTS) is set.

    parley console user add NAME --role agent --bot support     asks for the password (or --password-stdin)
    parley console user list --bot support
    parley console user remove NAME --bot support
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

from core.appsettings import AppSettings
from core.bot import BotSpec
from core.console.accounts import Accounts, Role, check_name, check_role
from core.console.audit import AuditLog
from core.console.mount import PREFIX, mount_console
from core.errors import ConfigError, LLMError
from core.keys import KeySpace
from core.llm import LLMRequest
from core.ops.redisconn import connect as connect_redis
from core.redis_server import RedisServer
from core.runtime import open_runtime, ping
from core.settings import Settings

CONSOLE_OFF = (
    "PARLEY_CONSOLE_PASSWORD: not set; the console is off without a password (12 characters or more, in the "
    "environment or .env) or PARLEY_CONSOLE_ACCOUNTS=true (accounts made with `parley console user add`)"
)


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password (12 characters or more): ")
    if getpass.getpass("Again: ") != first:
        raise ConfigError("the two passwords differ")
    return first


@asynccontextmanager
async def _redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """The bot's Redis alone (REDIS_URL, or the embedded server under PARLEY_DATA_DIR), as the runtime
    opens it; no LLM, tools or knowledge base are started for an account change."""
    async with AsyncExitStack() as stack:
        if settings.redis_url is not None:
            url, where = settings.redis_url.get_secret_value(), "REDIS_URL"
        else:
            server = RedisServer(settings.parley_data_dir / "redis")
            await asyncio.to_thread(server.start)
            stack.callback(server.stop)
            url, where = server.url, f"embedded redis-server ({server.data_dir})"
        connection = connect_redis(url)
        stack.push_async_callback(connection.aclose)
        await ping(connection.client, where)
        yield connection.client


async def manage_users(args: argparse.Namespace, settings: Settings, spec: BotSpec) -> int:
    role: Role | None = None
    name = ""
    password = ""
    if args.user_command == "add":
        name = check_name(args.name)  # bad input is refused before anything is opened
        role = check_role(args.role)
        password = _read_password(args.password_stdin)
    async with _redis(settings) as client:
        keys = KeySpace(spec.name)
        accounts = Accounts(client, keys)
        audit = AuditLog(client, keys)
        if args.user_command == "add":
            assert role is not None
            password_hash = await asyncio.to_thread(accounts.hash, password)
            account = await accounts.add(name, role, password_hash, replace=args.replace)
            await audit.record("cli", "admin", "user_add", account.name, account.role.value)
            print(f"console account {account.name} ({account.role.value}) saved for bot {spec.name}")
        elif args.user_command == "remove":
            gone = args.name.strip().lower()
            if not await accounts.remove(gone):
                raise ConfigError(f"no console account {gone!r}")
            await audit.record("cli", "admin", "user_remove", gone)
            print(f"console account {gone} removed (its open sessions end now)")
        else:
            for account in await accounts.all():
                print(f"{account.name}\t{account.role.value}")
    return 0


class _NoLLM:
    """The console never calls the model."""

    async def stream(self, request: LLMRequest) -> Any:
        raise LLMError("the console does not call the LLM")
        yield  # noqa: V201  # pragma: no cover - unreachable; makes this an async generator

    async def aclose(self) -> None:
        return None


async def serve_console(app: AppSettings, spec: BotSpec, stop: asyncio.Event | None = None) -> int:
    if not app.console.enabled:
        raise ConfigError(CONSOLE_OFF)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    # No turn is answered here: neither the LLM, the moderation endpoint nor the MCP servers are needed
    # (starting the support bot's orders server alone took seconds).
    # The bot's platforms are read (no connection is made) for the settings page and their links.
    from bots.cli_commands import PLATFORMS, links

    platforms = [PLATFORMS[name](spec) for name in spec.config.platforms if name in PLATFORMS]
    app = app.replace(
        core=app.core.model_copy(update={"parley_mcp": False}),
        safety=app.safety.model_copy(update={"parley_moderation_endpoint": False}),
    ).with_platforms({platform.name: platform.settings for platform in platforms})
    async with open_runtime(spec, app, llm=_NoLLM()) as rt:
        await mount_console(rt, links(platforms))
        await rt.ops.http.start()
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            http = rt.ops.http
            port = http.bound.get(PREFIX) or http.bound.get("ops") or http.bound.get("public")
            print(
                f"parley console: http://127.0.0.1:{port}{PREFIX}/ (bot {spec.name}; Ctrl-C stops)",
                flush=True,
            )
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await rt.ops.http.aclose()
    return 0
