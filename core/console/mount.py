"""Build the console from a running bot and serve it: under ``/console`` on the ops server, or on
``PARLEY_CONSOLE_PORT`` when that is set."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from core.console.app import Console, LinkFor
from core.console.auth import ConsoleAuth
from core.console.limits import parse_networks
from core.console.outbox import Outbox
from core.console.reads import ConsoleReads
from core.console.stats import DailyStats
from core.console.stats import build_stats as stats_for
from core.safety.mask import masked_settings

if TYPE_CHECKING:
    from core.runtime import Runtime

PREFIX = "/console"
SECRET_SHOWN = ("******** (set)", "(not set)")  # what a secret shows on the settings page


NO_LINKS: Mapping[str, LinkFor] = MappingProxyType({})


def build_stats(rt: Runtime) -> DailyStats:
    """The aggregates of one bot (what turns write and the console reads)."""
    return stats_for(rt.redis, rt.keys, rt.bot, rt.settings, rt.app.console)


def _fields(value: object) -> object:
    """A platform's settings may be a dataclass of models (Slack's credentials and [slack] table): its fields
    as a mapping, so they are masked and flattened like a model's."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return value


def effective_config(rt: Runtime) -> dict[str, dict[str, str]]:
    """Every setting as text, secrets masked (a secret is never sent to the browser): the settings the
    runtime was built with (core/appsettings.py), platforms included when the bots layer added them."""
    app = rt.app
    sections: dict[str, dict[str, str]] = {}
    areas: list[tuple[str, object]] = [("process (environment)", app.core)]
    areas += [(f"platform {name}", settings) for name, settings in sorted(app.platforms.items())]
    areas += [("safety", app.safety), ("console", app.console), ("embeddings", app.embeddings)]
    for name, model in areas:
        sections[name] = masked_settings(_fields(model), secret=SECRET_SHOWN)
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


async def build_console(
    rt: Runtime, links: Mapping[str, LinkFor] = NO_LINKS, stats: DailyStats | None = None
) -> Console:
    """The console of ``rt`` (its settings: ``rt.app.console``). ``links``: platform name -> its
    ``link_for(place)`` (given by the bots layer; a platform without one gets no "open in" link)."""
    settings = rt.app.console
    stats = stats or rt.stats or build_stats(rt)
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
        effective=effective_config(rt),
        knowledge=rt.bot.knowledge or "",
        prefix=PREFIX,
        outbox_for=_outboxes(rt),
        count_tokens=rt.engine.counter.count,
        redact=rt.safety.redactor.redact,
        trusted_proxies=parse_networks(settings.parley_console_trusted_proxies),
        handoff_target_minutes=settings.parley_console_handoff_target_minutes,
        embed=embedder.embed if embedder is not None else None,
        links=links,
    )


async def mount_console(
    rt: Runtime, links: Mapping[str, LinkFor] = NO_LINKS, stats: DailyStats | None = None
) -> Console | None:
    """Serve the console with the runtime's HTTP server (``parley run``); None when it is off (neither the
    shared password nor ``PARLEY_CONSOLE_ACCOUNTS``)."""
    settings = rt.app.console
    if not settings.enabled:
        return None
    console = await build_console(rt, links, stats)
    rt.ops.http.mount_app(PREFIX, await console.app(), port=settings.parley_console_port)
    return console
