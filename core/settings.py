"""Process-wide settings, read once from the environment and ``.env`` (house rule 9).

Platform credentials live in each adapter's own settings class; this holds what the core needs.
Validation errors are turned into :class:`ConfigError` lines that name the variable and never echo a value.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.credentials import CredentialBox, parse_keys
from core.errors import ConfigError


class ModelLimits(BaseModel):
    """A model's provider limits, for servers that send no ``x-ratelimit-*`` headers; 0 = unknown."""

    model_config = ConfigDict(extra="forbid")

    rpm: int = Field(default=0, ge=0)  # requests per minute
    tpm: int = Field(default=0, ge=0)  # tokens (prompt + max_tokens) per minute


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # The language model: OpenAI itself or any OpenAI-compatible server (vLLM, Ollama, llama.cpp).
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    parley_image_model: str | None = None
    # Speech (/speak, narrated stories) and transcription (voice messages): the LLM's endpoint unless set.
    parley_tts_base_url: str | None = None
    parley_tts_api_key: SecretStr | None = None
    parley_tts_model: str = "gpt-4o-mini-tts"
    parley_transcribe_model: str = (
        "whisper-1"  # /imagine's Images API model (overrides bot.toml [images] model)
    )

    # Redis: unset means a private redis-server started under PARLEY_DATA_DIR.
    redis_url: SecretStr | None = None
    # Redis Sentinel (instead of REDIS_URL): the sentinels "host:port,host:port", the monitored master's name,
    # the data nodes' password and the sentinels' own password (core/ops/redisconn.py).
    redis_sentinels: str | None = None
    redis_sentinel_master: str | None = None
    redis_password: SecretStr | None = None
    redis_sentinel_password: SecretStr | None = None
    # Sentinel / Cluster: seconds a command waits for a failover (a replica promoted) before it fails.
    parley_redis_failover_wait: float = Field(default=10.0, ge=0, le=120)
    # Connections a standalone Redis client opens at start-up (of its pool's 64): a burst of turns otherwise
    # opens one per waiting command on its way to the LLM requests (connect + handshake each). 0: lazily.
    parley_redis_warm_connections: int = Field(default=16, ge=0, le=64)

    port: int = Field(default=3000, ge=0, le=65535)

    parley_env: Literal["development", "production"] = "development"
    parley_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    parley_log_format: Literal["auto", "json", "console"] = "auto"
    parley_data_dir: Path = Path(".parley")

    parley_llm_connect_timeout: float = Field(default=5.0, gt=0)
    parley_llm_first_token_timeout: float = Field(default=30.0, gt=0)
    parley_llm_total_timeout: float = Field(default=120.0, gt=0)
    parley_llm_max_retries: int = Field(default=2, ge=0, le=10)
    parley_llm_stream_usage: bool = True  # ask for the final usage chunk (stream_options.include_usage)
    # Plain-http endpoints: a streamed reply asks for ``Connection: close`` and is read from a quiet socket
    # that only the server's close wakes (core/net/aio.py); false: keep-alive, batches 100 ms apart.
    parley_llm_quiet_streams: bool = True
    parley_mcp: bool = True  # start the bots' MCP servers ([[tools.mcp]]); false leaves their tools out

    # Scale-out and operations (core/ops): health/metrics server, durable turn queue, locks, circuit breaker.
    # /healthz, /readyz and /metrics have their own server, on loopback unless told otherwise (Kubernetes
    # probes need 0.0.0.0); PARLEY_OPS_PORT equal to PORT shares PORT's server (an explicit opt-in).
    parley_ops_port: int = Field(default=9090, ge=0, le=65535)
    parley_ops_host: str = "127.0.0.1"
    parley_http_host: str = "0.0.0.0"  # noqa: S104 - interface of PORT (Slack HTTP mode) in `parley run`
    # Slow and idle clients (core/ops/http.py): seconds for a request head (and idle keep-alive), seconds for
    # a request body, open connections per server.
    parley_http_keepalive: float = Field(default=5.0, gt=0, le=300)
    parley_http_body_timeout: float = Field(default=10.0, gt=0, le=300)
    parley_http_max_connections: int = Field(default=256, ge=1, le=100_000)
    # Of those, from one client address; a reverse proxy's own addresses go in PARLEY_HTTP_TRUSTED_PROXIES
    # (comma-separated IPs or CIDRs): exempt from the per-client cap, and the only ones whose
    # X-Forwarded-For is believed.
    parley_http_max_connections_per_peer: int = Field(default=32, ge=1, le=100_000)
    parley_http_trusted_proxies: str = ""
    # Fernet keys, comma-separated, newest first: encrypt credentials kept in Redis (core/credentials.py).
    parley_credentials_keys: SecretStr | None = None
    parley_ready_llm: bool = True  # an open LLM circuit makes /readyz fail
    parley_queue: bool = True  # turns go through the Redis queue (else each process answers its own)
    parley_queue_max: int = Field(default=10_000, ge=1)  # queue entries before users hear "busy"
    parley_queue_max_per_conversation: int = Field(default=100, ge=1)  # waiting turns in one conversation
    # Queued items older than this are refused, and their nonces are kept this long (replays refused).
    parley_job_max_age_seconds: float = Field(default=3600.0, ge=60)
    # Turns answered in-process at once when the queue is off or Redis is down; past it users hear "busy".
    parley_direct_max: int = Field(default=256, ge=1)
    # Seconds a turn may go without its owner's heartbeat before another worker takes it (the owner died).
    parley_queue_claim_idle: float = Field(default=10.0, gt=0)
    # Turns one process works on at once: generating, or waiting in the fair line for a generation slot
    # (max_concurrent_per_workspace bounds the LLM calls themselves).
    parley_workers: int = Field(default=128, ge=1)
    # Processes answering queued turns on this host: `parley run` starts and supervises this many minus one
    # more `parley run --workers-only` processes (core/ops/processes.py), one event loop (core) each.
    parley_worker_processes: int = Field(default=1, ge=1, le=64)
    # Turns of one process in their first stages (load, route, prompt, handing the LLM request over) at
    # once; the others wait for a place, at most 0.5 s (core/starts.py). 0: no limit.
    parley_turn_starts: int = Field(default=8, ge=0)
    parley_worker_name: str | None = None  # consumer name prefix (e.g. the pod name); default host-pid
    parley_lock_lease: float = Field(default=10.0, gt=0)  # conversation lock lease, renewed by heartbeats
    # Seconds between an owner's heartbeats (lease renewal + the turn's signal refreshed); default the
    # smaller of 3 s and a third of the lease.
    parley_lease_heartbeat: float | None = Field(default=None, gt=0)
    parley_lock_wait: float = Field(default=60.0, ge=0)  # how long a direct turn waits for the lock
    # SIGTERM: seconds for running turns to finish (then they are handed back); closing adds at most 2 s.
    parley_shutdown_grace: float = Field(default=7.0, ge=0)
    parley_llm_breaker_failures: int = Field(default=5, ge=0)  # consecutive failures that open it; 0 = off
    parley_llm_breaker_reset: float = Field(default=30.0, gt=0)  # seconds open before a trial call
    # The provider's limits as one budget in Redis for all replicas (core/ops/pacing.py). RPM/TPM and the
    # per-model table (JSON: {"model": {"rpm": 500, "tpm": 200000}}) override bot.toml [llm_limits].
    parley_llm_pacing: bool = True  # pace starts by the shared budget; a 429 pauses every replica
    parley_llm_rpm: int = Field(default=0, ge=0)  # requests per minute, every model; 0 = unknown
    parley_llm_tpm: int = Field(default=0, ge=0)  # tokens per minute, every model; 0 = unknown
    parley_llm_model_limits: dict[str, ModelLimits] = Field(default_factory=dict)
    parley_llm_pace_max_wait: float = Field(default=30.0, ge=0)  # longest wait for the budget, then apologise
    parley_llm_rate_retries: int = Field(default=3, ge=0, le=20)  # 429s retried (after the pause) per call

    @field_validator(
        "openai_api_key",
        "openai_base_url",
        "redis_url",
        "redis_sentinels",
        "redis_sentinel_master",
        "redis_password",
        "redis_sentinel_password",
        "parley_credentials_keys",
        "parley_tts_base_url",
        "parley_tts_api_key",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _sentinel(self) -> Settings:
        if self.redis_sentinels is None:
            if self.redis_sentinel_master is not None:
                raise ValueError("REDIS_SENTINEL_MASTER needs REDIS_SENTINELS (the sentinels, host:port)")
            return self
        if self.redis_url is not None:
            raise ValueError("set REDIS_URL or REDIS_SENTINELS, not both")
        if not self.redis_sentinel_master:
            raise ValueError("REDIS_SENTINELS needs REDIS_SENTINEL_MASTER (the monitored master's name)")
        return self

    @model_validator(mode="after")
    def _queue_timing(self) -> Settings:
        beat = self.heartbeat
        if beat * 2 > self.parley_lock_lease:
            raise ValueError(
                "PARLEY_LEASE_HEARTBEAT must be at most half of PARLEY_LOCK_LEASE (a lease must survive one "
                "missed heartbeat)"
            )
        if self.parley_queue_claim_idle < beat * 2:
            raise ValueError(
                "PARLEY_QUEUE_CLAIM_IDLE must be at least two heartbeats (PARLEY_LEASE_HEARTBEAT, default "
                "min(3 s, lease / 3)): a shorter idle time would let another worker take a live turn"
            )
        return self

    @property
    def heartbeat(self) -> float:
        """Seconds between a turn owner's heartbeats."""
        return self.parley_lease_heartbeat or min(3.0, self.parley_lock_lease / 3)

    @field_validator("parley_http_trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in filter(None, (i.strip() for i in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {item!r}") from None
        return value

    @field_validator("parley_credentials_keys")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        try:
            parse_keys(value)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("PARLEY_CREDENTIALS_KEYS: ")) from None
        return value

    def credential_box(self) -> CredentialBox:
        """The box that seals credentials kept in Redis (``ConfigError`` in production without keys)."""
        return CredentialBox.from_settings(
            self.parley_credentials_keys, production=self.parley_env == "production"
        )

    @property
    def llm_configured(self) -> bool:
        return self.openai_api_key is not None or bool(self.openai_base_url)


def describe_validation_error(exc: ValidationError, *, prefix: str = "", env: bool = False) -> str:
    """One line per problem, naming the field (as its environment variable when ``env``), never the value
    (it may be a secret)."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        name = f"{prefix}{loc}".upper() if env else f"{prefix}{loc}"
        lines.append(f"{name}: {err['msg']}")
    return "; ".join(lines)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(f"invalid setting: {describe_validation_error(exc, env=True)}") from None
