"""The application's settings: every area's settings object, read once by the CLI and passed down.

Each area keeps its own class next to the code that uses it (``Settings`` for the process, LLM, Redis and
operations; ``SafetySettings``; ``ConsoleSettings``; ``EmbeddingSettings``); :func:`load_app_settings` reads
them all, once, and nothing below the CLI reads the environment again. A platform's settings depend on the
bot (its ``bot.toml`` table), so the bots layer adds them with :meth:`AppSettings.with_platforms` once the bot
is loaded (core never imports a platform: it only shows them, masked, on the console's settings page).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from core.console.settings import ConsoleSettings, load_console_settings
from core.errors import ConfigError
from core.kb.settings import EmbeddingSettings, load_embedding_settings
from core.safety.settings import SafetySettings, load_safety_settings
from core.settings import Settings, load_settings

T = TypeVar("T")
_PREFIX = "invalid setting: "


@dataclass(frozen=True, slots=True)
class AppSettings:
    core: Settings  # the process: LLM, Redis, queue and workers, ops server, logging
    safety: SafetySettings  # the moderation endpoint
    console: ConsoleSettings  # the operator console and its daily aggregates (kept even with no console)
    embeddings: EmbeddingSettings  # the knowledge base's embeddings (server or the embedded model)
    # platform name -> what its package read (credentials, its bot.toml table), added by the bots layer
    platforms: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def replace(self, **changes: Any) -> AppSettings:
        """A copy with some areas replaced (e.g. ``core=app.core.model_copy(update=...)``)."""
        return dataclasses.replace(self, **changes)

    def with_platforms(self, platforms: Mapping[str, object]) -> AppSettings:
        return dataclasses.replace(self, platforms=MappingProxyType(dict(platforms)))


def load_app_settings() -> AppSettings:
    """Every core area's settings from the environment and ``.env``, each read once. Any bad values: one
    :class:`ConfigError` naming every bad variable (in all areas), never a value."""
    problems: list[str] = []

    def read(load: Callable[[], T]) -> T | None:
        try:
            return load()
        except ConfigError as exc:
            problems.append(str(exc).removeprefix(_PREFIX))
            return None

    core = read(load_settings)
    safety = read(load_safety_settings)
    console = read(load_console_settings)
    embeddings = read(load_embedding_settings)
    if core is None or safety is None or console is None or embeddings is None:
        raise ConfigError(_PREFIX + "; ".join(problems))
    return AppSettings(core, safety, console, embeddings)
