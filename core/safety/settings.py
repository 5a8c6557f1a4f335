"""Process-wide safety settings (environment and ``.env``), read once at start-up.

The moderation endpoint defaults to the LLM's own (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``); point it
elsewhere when the LLM is a local server without ``/v1/moderations``, or switch it off.
"""

from __future__ import annotations

from pydantic import SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError
from core.settings import describe_validation_error


class SafetySettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    parley_moderation_endpoint: bool = True  # false: local rules only, whatever the profile says
    parley_moderation_base_url: str | None = None  # default: OPENAI_BASE_URL
    parley_moderation_api_key: SecretStr | None = None  # default: OPENAI_API_KEY
    parley_moderation_model: str = "omni-moderation-latest"

    @field_validator("parley_moderation_base_url", "parley_moderation_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


def load_safety_settings(**overrides: object) -> SafetySettings:
    """Read the safety settings once (the CLI does, with the other settings); a bad value is a ConfigError
    naming the variable, never echoing it."""
    try:
        return SafetySettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(f"invalid setting: {describe_validation_error(exc, env=True)}") from None
