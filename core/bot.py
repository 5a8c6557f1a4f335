"""A bot's definition: its ``bot.toml``, personas, reference knowledge and optional plugin.

``bot.toml`` is validated into :class:`BotConfig`; a wrong field is a :class:`ConfigError` naming it.
Platform tables (``[slack]``, ``[discord]``) stay raw here: each adapter validates its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError
from core.settings import describe_validation_error

if TYPE_CHECKING:
    from core.commands import Command
    from core.engine import TurnContext
    from core.personas import Persona
    from core.types import ReplyResult


class MemoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_messages: int = Field(default=500, ge=2, le=100_000)  # hard cap of stored messages per conversation
    ttl_days: float = Field(default=30, gt=0)  # retention: a conversation untouched this long is forgotten
    window_max_messages: int = Field(default=60, ge=2, le=1_000)  # tail read per turn (the budget trims it)
    summary: bool = True  # fold what falls out of the window into a running summary
    fold_after: int = Field(default=8, ge=1)  # out-of-window messages that trigger a summary fold
    remember_others: bool = True  # store unaddressed channel messages as context when they reach us
    # Redis unreachable: "apologise" answers the persona's memory_error; "answer" replies without memory
    # (nothing is stored, the reply's meta says memory=unavailable).
    when_unavailable: Literal["apologise", "answer"] = "apologise"


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_input_chars: int = Field(default=4_000, ge=1)


class ModerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str = "standard"
    blocked_patterns: list[str] = Field(default_factory=list)  # regexes, checked on input and output
    blocked_category: str = "blocked_pattern"


class BotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    display_name: str = ""
    description: str = ""
    default_persona: str
    story_persona: str = "storyteller"
    platforms: list[str] = Field(default_factory=list)
    knowledge: str | None = None  # a file in the bot folder, put in the prompt as untrusted reference text
    commands: list[str] = Field(default_factory=lambda: ["help", "reset", "persona", "story"])
    admin_commands: list[str] = Field(default_factory=lambda: ["persona"])  # switching needs an admin
    answer_unaddressed: bool = False
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    moderation: ModerationConfig = Field(default_factory=ModerationConfig)
    slack: dict[str, Any] = Field(default_factory=dict)
    discord: dict[str, Any] = Field(default_factory=dict)
    console: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _display(self) -> BotConfig:
        if not self.display_name:
            self.display_name = self.name.capitalize()
        return self


class BotPlugin(Protocol):
    """Optional bot-specific Python (``plugin.py`` in the bot folder exposing ``plugin``)."""

    def commands(self) -> Iterable[Command]: ...

    async def before_turn(self, ctx: TurnContext) -> ReplyResult | None:
        """Return a result to answer the turn without the LLM (e.g. a handoff), or None to go on."""
        ...


AfterTurn = Callable[["TurnContext", "ReplyResult"], Awaitable["ReplyResult"]]


@dataclass(frozen=True)
class BotSpec:
    name: str
    folder: Path
    config: BotConfig
    personas: Mapping[str, Persona]
    knowledge: str = ""
    plugin: BotPlugin | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def platform_config(self, platform: str) -> dict[str, Any]:
        table = getattr(self.config, platform, None)
        return dict(table) if isinstance(table, dict) else {}

    def persona(self, name: str | None) -> Persona:
        if name and name in self.personas:
            return self.personas[name]
        return self.personas[self.config.default_persona]


def parse_bot_config(raw: dict[str, Any], source: Path) -> BotConfig:
    try:
        return BotConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, prefix='')}") from None
