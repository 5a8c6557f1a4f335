"""Knowledge-base settings: the embeddings endpoint (environment) and the ``[kb]`` table of ``bot.toml``.

Embeddings are on when ``EMBEDDINGS_BASE_URL`` or ``EMBEDDINGS_MODEL`` is set; the base URL and key default
to the LLM's (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``). Without them retrieval is lexical-only (BM25).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError
from core.settings import Settings, describe_validation_error

DEFAULT_EMBEDDINGS_MODEL = "text-embedding-3-small"


class EmbeddingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    embeddings_base_url: str | None = None  # default: OPENAI_BASE_URL
    embeddings_api_key: SecretStr | None = None  # default: OPENAI_API_KEY
    embeddings_model: str | None = None  # default: text-embedding-3-small (when the base URL is set)
    embeddings_batch: int = Field(default=64, ge=1, le=2048)  # texts per request
    embeddings_timeout: float = Field(default=20.0, gt=0)

    @field_validator("embeddings_base_url", "embeddings_api_key", "embeddings_model", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def enabled(self) -> bool:
        return self.embeddings_base_url is not None or self.embeddings_model is not None

    @property
    def model(self) -> str:
        return self.embeddings_model or DEFAULT_EMBEDDINGS_MODEL

    def base_url(self, settings: Settings) -> str | None:
        return self.embeddings_base_url or settings.openai_base_url

    def api_key(self, settings: Settings) -> str:
        key = self.embeddings_api_key or settings.openai_api_key
        # Local servers (Ollama, vLLM) take any key; the client insists on one.
        return key.get_secret_value() if key is not None else "unused"

    def describe(self, settings: Settings) -> str:
        """One line for ``parley check``."""
        if not self.enabled:
            return "kb: lexical-only retrieval (set EMBEDDINGS_BASE_URL or EMBEDDINGS_MODEL for hybrid)"
        where = self.base_url(settings) or "api.openai.com"
        return f"kb: hybrid retrieval (BM25 + embeddings {self.model} at {where})"


def load_embedding_settings(**overrides: object) -> EmbeddingSettings:
    try:
        return EmbeddingSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(f"invalid setting: {describe_validation_error(exc, env=True)}") from None


class KbConfig(BaseModel):
    """The ``[kb]`` table of ``bot.toml``."""

    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(default_factory=list)  # what `parley kb ingest` reads when given no paths
    base_url: str = ""  # a local page's link: base_url + its path without the suffix ("" = the file path)
    chunk_tokens: int = Field(default=300, ge=50, le=4_000)  # a chunk's size, roughly (4 chars a token)
    overlap_tokens: int = Field(default=40, ge=0, le=1_000)  # carried over between chunks of a long section
    top_k: int = Field(default=5, ge=1, le=50)  # chunks given to the model at most
    candidates: int = Field(default=50, ge=1, le=1_000)  # per retriever, before fusion
    rrf_k: int = Field(default=60, ge=1)  # reciprocal rank fusion constant
    budget_tokens: int = Field(default=1_200, ge=100, le=100_000)  # reference tokens in a prompt
    persona_budgets: dict[str, int] = Field(default_factory=dict)  # persona name -> its own budget
    # "Covered" when the best chunk holds this idf-weighted share of the question's words ...
    min_coverage: float = Field(default=0.3, ge=0, le=1)
    # ... or its embedding is at least this similar (cosine) to the question's.
    min_similarity: float = Field(default=0.5, ge=-1, le=1)
    # The answer to a question the base does not cover, without the model ("" = the model says so itself).
    not_covered_text: str = ""
    allow_flagged: bool = False  # keep chunks the injection tripwires flag (they are always reported)
    redact: bool = True  # redact personal data in documents with the bot's [privacy] redact kinds
    # seconds between index version checks (one GET each; 2 s was a third of a quiet bot's Redis commands)
    check_interval: float = Field(default=10.0, gt=0, le=3_600)
    default_collections: list[str] = Field(default_factory=list)  # channels not in `channels`; [] = all
    channels: dict[str, list[str]] = Field(default_factory=dict)  # channel id -> the collections it reads
    collections: dict[str, str] = Field(default_factory=dict)  # source folder/prefix -> collection name

    @field_validator("persona_budgets")
    @classmethod
    def _budgets(cls, value: dict[str, int]) -> dict[str, int]:
        for name, budget in value.items():
            if budget < 100:
                raise ValueError(f"persona_budgets.{name}: must be at least 100")
        return value

    def budget(self, persona: str) -> int:
        return self.persona_budgets.get(persona, self.budget_tokens)

    def scope(self, channel: str) -> tuple[str, ...]:
        """The collections a channel reads; empty means every collection."""
        return tuple(self.channels.get(channel, self.default_collections))


def parse_kb_config(raw: dict[str, Any], source: str) -> KbConfig:
    try:
        return KbConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, prefix='kb.')}") from None
