"""Build the console from a running bot and serve it: under ``/console`` on the ops server, or on
``PARLEY_CONSOLE_PORT`` when that is set."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.console.app import Console
from core.console.auth import ConsoleAuth
from core.console.reads import ConsoleReads
from core.console.settings import ConsoleSettings
from core.console.stats import DailyStats
from core.console.stats import build_stats as stats_for
from core.safety.mask import masked_settings

if TYPE_CHECKING:
    from core.runtime import Runtime

PREFIX = "/console"


def build_stats(rt: Runtime, settings: ConsoleSettings) -> DailyStats:
    """The aggregates of one bot (what turns write and the console reads)."""
    return stats_for(rt.redis, rt.keys, rt.bot, rt.settings, settings)


def effective_config(rt: Runtime, settings: ConsoleSettings) -> dict[str, dict[str, str]]:
    """Every setting as text, secrets masked (a secret is never sent to the browser)."""
    sections: dict[str, dict[str, str]] = {}
    for name, model in (("process (environment)", rt.settings), ("console", settings)):
        sections[name] = masked_settings(model)
    sections[f"bot {rt.bot.name} (bot.toml)"] = masked_settings(rt.bot.config)
    sections["personas"] = {
        name: f"model {p.model or rt.settings.openai_model}, temperature {p.temperature}"
        for name, p in rt.bot.personas.items()
    }
    return sections


async def build_console(rt: Runtime, settings: ConsoleSettings, stats: DailyStats | None = None) -> Console:
    assert settings.parley_console_password is not None
    stats = stats or rt.stats or build_stats(rt, settings)
    events = rt.safety.events if rt.safety is not None else None
    stream = events.stream if events is not None else rt.keys.scoped("safety", "events")
    auth = ConsoleAuth(
        rt.redis,
        rt.keys,
        settings.parley_console_password,
        session_seconds=int(settings.parley_console_session_hours * 3600),
        login_attempts=settings.parley_console_login_attempts,
    )
    return Console(
        bot=rt.bot.name,
        auth=auth,
        stats=stats,
        reads=ConsoleReads(rt.redis, rt.keys, stats, stream),
        memory=rt.engine.memory,
        redis=rt.redis,
        events=events,
        effective=effective_config(rt, settings),
        knowledge=rt.bot.knowledge or "",
        prefix=PREFIX,
    )


async def mount_console(
    rt: Runtime, settings: ConsoleSettings, stats: DailyStats | None = None
) -> Console | None:
    """Serve the console with the runtime's HTTP server (``parley run``); None when no password is set."""
    if not settings.enabled:
        return None
    console = await build_console(rt, settings, stats)
    rt.ops.http.mount_app(PREFIX, await console.app(), port=settings.parley_console_port)
    return console
