"""``parley console --bot NAME``: serve only the operator console, for a local look at a bot's data.

It opens the bot's runtime (REDIS_URL, or the embedded redis-server under PARLEY_DATA_DIR as ``parley chat``
does), connects to no platform and answers no turn; it needs no LLM. ``parley run`` serves the same console
beside the bot when PARLEY_CONSOLE_PASSWORD is set.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from core.bot import BotSpec
from core.console.mount import PREFIX, mount_console
from core.console.settings import ConsoleSettings
from core.errors import ConfigError, LLMError
from core.llm import LLMRequest
from core.runtime import open_runtime
from core.safety.settings import load_safety_settings
from core.settings import Settings

CONSOLE_OFF = (
    "PARLEY_CONSOLE_PASSWORD: not set; the console is off without a password (12 characters or more, in the "
    "environment or .env)"
)


class _NoLLM:
    """The console never calls the model."""

    async def stream(self, request: LLMRequest) -> Any:
        raise LLMError("the console does not call the LLM")
        yield  # noqa: V201  # pragma: no cover - unreachable; makes this an async generator

    async def aclose(self) -> None:
        return None


async def serve_console(
    settings: Settings, config: ConsoleSettings, spec: BotSpec, stop: asyncio.Event | None = None
) -> int:
    if not config.enabled:
        raise ConfigError(CONSOLE_OFF)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    # No turn is answered here: neither the LLM nor the moderation endpoint is needed (or probed).
    safety = load_safety_settings(parley_moderation_endpoint=False)
    async with open_runtime(
        spec, settings, llm=_NoLLM(), safety_settings=safety, console_settings=config
    ) as rt:
        await mount_console(rt, config)
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
