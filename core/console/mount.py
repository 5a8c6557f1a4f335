"""Build the console from a running bot and serve it: under ``/console`` on the ops server, or on
``PARLEY_CONSOLE_PORT`` when that is set."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.console.app import Console
from core.console.auth import ConsoleAuth
from core.console.limits import parse_networks
from core.console.outbox import Outbox
from core.console.reads import ConsoleReads
from core.console.settings import ConsoleSettings
from core.console.stats import DailyStats
from core.console.stats import build_stats as stats_for
from core.safety.mask import masked_settings

if TYPE_CHECKING:
    from core.runtime import Runtime

PREFIX = "/console"
SECRET_SHOWN = ("******** (set)", "(not set)")  # what a secret shows on the settings page


def build_stats(rt: Runtime, settings: ConsoleSettings) -> DailyStats:
    """The aggregates of one bot (what turns write and the console reads)."""
    return stats_for(rt.redis, rt.keys, rt.bot, rt.settings, settings)


class PlatformCredentials(BaseSettings):
    """Every platform's credentials by their environment names, read once to show them masked in settings
    (core never imports an adapter: the names are all it needs)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_client_id: str | None = None
    slack_client_secret: SecretStr | None = None
    discord_token: SecretStr | None = None


def effective_config(rt: Runtime, settings: ConsoleSettings) -> dict[str, dict[str, str]]:
    """Every setting as text, secrets masked (a secret is never sent to the browser)."""
    sections: dict[str, dict[str, str]] = {}
    platforms = PlatformCredentials()
    for name, model in (
        ("process (environment)", rt.settings),
        ("platform credentials", platforms),
        ("console", settings),
    ):
        sections[name] = masked_settings(model, secret=SECRET_SHOWN)
    sections[f"bot {rt.bot.name} (bot.toml)"] = masked_settings(rt.bot.config, secret=SECRET_SHOWN)
    sections["personas"] = {
        name: f"model {p.model or rt.settings.openai_model}, temperature {p.temperature}"
        for name, p in rt.bot.personas.items()
    }
    return sections


def _outboxes(rt: Runtime) -> Callable[[str], Outbox | None]:
    """The console's way to a platform: the Delivery registered for it, when that offers ``post``."""

    def outbox_for(platform: str) -> Outbox | None:
        if platform not in rt.ops.deliveries:
            return None
        delivery = rt.ops.deliveries.get(platform)
        return delivery if isinstance(delivery, Outbox) else None

    return outbox_for


async def build_console(rt: Runtime, settings: ConsoleSettings, stats: DailyStats | None = None) -> Console:
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
    embedder = rt.knowledge.embedder if rt.knowledge is not None else None
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
        outbox_for=_outboxes(rt),
        count_tokens=rt.engine.counter.count,
        redact=rt.safety.redactor.redact,
        trusted_proxies=parse_networks(settings.parley_console_trusted_proxies),
        handoff_target_minutes=settings.parley_console_handoff_target_minutes,
        embed=embedder.embed if embedder is not None else None,
    )


async def mount_console(
    rt: Runtime, settings: ConsoleSettings, stats: DailyStats | None = None
) -> Console | None:
    """Serve the console with the runtime's HTTP server (``parley run``); None when it is off (neither the
    shared password nor ``PARLEY_CONSOLE_ACCOUNTS``)."""
    if not settings.enabled:
        return None
    console = await build_console(rt, settings, stats)
    rt.ops.http.mount_app(PREFIX, await console.app(), port=settings.parley_console_port)
    return console
