"""Application settings for tests and benchmark scripts (core/appsettings.py), without pytest: the given
areas, the others at their defaults without a .env file, composed as the CLI would."""

from __future__ import annotations

from collections.abc import Mapping

from core.appsettings import AppSettings
from core.console.settings import ConsoleSettings
from core.kb.settings import EmbeddingSettings
from core.safety.settings import SafetySettings
from core.settings import Settings


def make_app(
    settings: Settings,
    *,
    safety: SafetySettings | None = None,
    console: ConsoleSettings | None = None,
    embeddings: EmbeddingSettings | None = None,
    platforms: Mapping[str, object] | None = None,
) -> AppSettings:
    return AppSettings(
        settings,
        safety or SafetySettings(_env_file=None),  # type: ignore[call-arg]
        console or ConsoleSettings(_env_file=None),  # type: ignore[call-arg]
        embeddings or EmbeddingSettings(_env_file=None),  # type: ignore[call-arg]
    ).with_platforms(platforms or {})
