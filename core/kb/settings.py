"""Knowledge-base settings: the embeddings endpoint (environment) and the ``[kb]`` table of ``bot.toml``.

With no ``EMBEDDINGS_*`` set, the embedded model (all-MiniLM-L6-v2, in process; the ``local-embeddings``
extra that ``make`` installs) gives hybrid retrieval; ``EMBEDDINGS_LOCAL=false`` turns it off (lexical only).
A server is used when ``EMBEDDINGS_BASE_URL`` or ``EMBEDDINGS_MODEL`` is set; its base URL and key default
to the LLM's (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``).
"""

from __future__ import annotations

from pathlib import Path
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
    embeddings_local: bool = True  # the embedded model when no server is configured (if installed)
    # Where the embedded model keeps the vectors it computed (by text); default <PARLEY_DATA_DIR>/embeddings;
    # "off" keeps none.
    embeddings_cache_dir: str | None = None

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

    def cache_dir(self, settings: Settings) -> Path | None:
        if self.embeddings_cache_dir is None or not self.embeddings_cache_dir.strip():
            return settings.parley_data_dir / "embeddings"
        if self.embeddings_cache_dir.strip().lower() == "off":
            return None
        return Path(self.embeddings_cache_dir)

    def base_url(self, settings: Settings) -> str | None:
        return self.embeddings_base_url or settings.openai_base_url

    def api_key(self, settings: Settings) -> str:
        key = self.embeddings_api_key or settings.openai_api_key
        # Local servers (Ollama, vLLM) take any key; the client insists on one.
        return key.get_secret_value() if key is not None else "unused"


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
    # A chunk's text in the embedding model's tokens (4 characters a token for a server's model); title and
    # context are added and the whole never passes the model's limit (254 word pieces for the embedded one).
    chunk_tokens: int = Field(default=200, ge=50, le=4_000)
    overlap_tokens: int = Field(default=30, ge=0, le=1_000)  # carried over between chunks of a long section
    top_k: int = Field(default=5, ge=1, le=50)  # chunks given to the model at most
    candidates: int = Field(default=50, ge=1, le=1_000)  # per retriever, before fusion
    # Fusion (fusion.py): the vector share of a convex combination of max-normalised BM25 and cosine.
    vector_weight: float = Field(default=0.8, ge=0, le=1)
    lexical_saturation: float = Field(default=10.0, gt=0)  # the BM25 score that counts half
    budget_tokens: int = Field(default=1_200, ge=100, le=100_000)  # reference tokens in a prompt
    persona_budgets: dict[str, int] = Field(default_factory=dict)  # persona name -> its own budget
    # "Covered" when the best chunk holds this idf-weighted share of the question's words ...
    min_coverage: float = Field(default=0.3, ge=0, le=1)
    # ... or its embedding is at least this similar (cosine) to the question's. Unset: the line calibrated
    # for the model on the corpus at ingest (calibrate.py), stored with the index.
    min_similarity: float | None = Field(default=None, ge=-1, le=1)
    retrieve_deadline: float = Field(default=1.0, gt=0, le=30)  # seconds: then lexical for this turn
    breaker_seconds: float = Field(default=30.0, ge=0, le=3_600)  # lexical-only after an embeddings failure
    # Outbound fetches at ingest (core/net/guard.py): hosts or addresses allowed despite being private or
    # loopback, and whether plain http is allowed at all.
    fetch_allow: list[str] = Field(default_factory=list)
    fetch_allow_http: bool = False
    max_pages: int = Field(default=10_000, ge=1, le=1_000_000)  # per URL or sitemap given to ingest
    sitemap_depth: int = Field(default=3, ge=0, le=10)  # nested sitemap indexes followed
    max_pdf_pages: int = Field(default=500, ge=1, le=100_000)
    max_text_bytes: int = Field(default=2_000_000, ge=10_000, le=100_000_000)  # extracted text per document
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
