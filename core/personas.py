"""Personas: who the bot is in a conversation, loaded from TOML files in a bot's folder.

A persona file holds the system prompt (with ``{bot_name}``, ``{date}``, ``{persona}``, ``{platform}``
placeholders), the model settings, the history token budget and the texts the bot uses for a
greeting, refusals and errors, so that even failures speak in the persona's voice.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ConfigError
from core.settings import describe_validation_error

_PLACEHOLDER = re.compile(r"\{(bot_name|date|persona|platform)\}")
# Values users control never enter the system prompt: the speaker's display name reaches the model as
# quoted data beside the conversation (core/prompt.py), so a persona that still asks for it is refused.
_USER_CONTROLLED = re.compile(r"\{user_name\}")


class _PersonaFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    description: str = ""
    system_prompt: str = Field(min_length=1)
    model: str | None = None
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_output_tokens: int = Field(default=600, ge=16, le=32_000)
    history_budget: int = Field(default=3_000, ge=200, le=500_000)
    greeting: str = "Hello! How can I help?"
    refusal: str = "Sorry, I can't help with that."
    error: str = "Sorry, something went wrong on my side. Please try again in a moment."
    too_long: str = "That message is too long for me. Could you shorten it?"
    memory_error: str = "I can't reach my memory right now, so please try again in a moment."
    busy: str = "I'm a little busy right now. Please try again shortly."
    vision: bool = False  # the model can look at images: attachments reach it as image parts
    no_vision: str = "I can't see images, sorry. Could you describe it in words?"
    voice: str = ""  # the speech voice for /speak and narrated stories (empty: [audio] voice)
    link_previews: bool = False  # Discord may unfurl links in this persona's replies (default: suppressed)


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    description: str
    system_prompt: str
    model: str | None
    temperature: float
    max_output_tokens: int
    history_budget: int
    greeting: str
    refusal: str
    error: str
    too_long: str
    memory_error: str
    busy: str
    vision: bool = False
    no_vision: str = "I can't see images, sorry. Could you describe it in words?"
    voice: str = ""
    link_previews: bool = False  # Discord may unfurl the links of this persona's replies (off: suppressed)

    def render_system(self, values: Mapping[str, str]) -> str:
        """Fill the known placeholders; any other braces in the prompt are left alone."""
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), self.system_prompt)


def load_persona(path: Path) -> Persona:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read persona: {exc}") from None
    try:
        data = _PersonaFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc, prefix='persona.')}") from None
    if _USER_CONTROLLED.search(data.system_prompt):
        raise ConfigError(
            f"{path}: persona.system_prompt: {{user_name}} is no longer filled in (a display name is chosen "
            "by the user, so it stays out of the system prompt; the model is told the speaker's name as "
            "quoted data beside the conversation): remove it"
        )
    return Persona(**data.model_dump())


def load_personas(*folders: Path) -> dict[str, Persona]:
    """Every ``*.toml`` in the folders; a later folder's persona of the same name wins."""
    personas: dict[str, Persona] = {}
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                persona = load_persona(path)
                personas[persona.name] = persona
    return personas
