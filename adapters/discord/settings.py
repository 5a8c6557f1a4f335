"""The Discord adapter's settings, read once (house rule 9).

Sources, highest priority first: environment variables (``DISCORD_*``), ``.env``, the bot's ``bot.toml``
``[discord]`` table, then the defaults below. The token is a secret: environment only, never in bot.toml,
never echoed in an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from core.errors import ConfigError

DEFAULT_API_URL = "https://discord.com/api/v10"
_ENV_ONLY = {"token"}

IdSet = Annotated[frozenset[int], NoDecode]


def _id_set(value: Any) -> Any:
    """``"1, 2 3"`` (env) or ``[1, 2]`` (TOML) -> a set of ids."""
    if value is None or value == "":
        return frozenset()
    if isinstance(value, str):
        return frozenset(int(part) for part in value.replace(",", " ").split())
    if isinstance(value, int):
        return frozenset({value})
    return frozenset(int(v) for v in value)


class DiscordSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DISCORD_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # "DISCORD_DEV_GUILD_ID=" in .env means unset
        extra="ignore",
        frozen=True,
    )

    token: SecretStr | None = None  # the bot token from the Developer Portal (Bot page)
    api_url: str = DEFAULT_API_URL  # REST base: a rate-limit proxy, or a fake in tests

    # Sharding: unset = automatic (Discord's recommendation from /gateway/bot); set both to split shards
    # across processes, e.g. DISCORD_SHARD_COUNT=4 and DISCORD_SHARD_IDS=0,1 in one process, 2,3 in another.
    shard_count: int | None = Field(default=None, ge=1)
    shard_ids: IdSet = frozenset()
    # Shard leases: replicas split the shards (DISCORD_SHARD_COUNT, else Discord's recommendation) through
    # Redis, each its share; a dead replica's shards move after shard_lease + shard_heartbeat seconds.
    shard_leases: bool = False
    shard_lease: float = Field(default=15.0, gt=0, le=300)
    shard_heartbeat: float = Field(default=5.0, gt=0, le=150)

    dev_guild_id: int | None = None  # register slash commands in this guild only (instant), else globally
    sync_commands: bool = True  # register slash commands at start-up when their definitions changed

    # What starts a turn. Reading every message needs the privileged message-content intent: opt in.
    message_content: bool = False
    listen_channels: IdSet = frozenset()  # every message there is a turn (turns message_content on)
    follow_threads: IdSet = frozenset()  # threads, or channels whose threads, are followed like the bot's own
    ignore_bots: bool = True
    allowed_bots: IdSet = frozenset()  # bot ids answered even with ignore_bots
    open_threads: bool = False  # a mention in a channel opens a thread for the conversation

    # Turns the engine flags (ReplyResult.flag) are reported here; unset: logged once per process, not posted.
    moderators_channel_id: int | None = Field(default=None, ge=1)

    edit_interval: float = Field(default=1.0, ge=0.2)  # seconds between edits of one streamed message
    typing: bool = True
    # "typing..." only for a reply with no text after this many seconds: a quick reply never sends it (one
    # REST call fewer per turn, on a burst's path to the LLM requests) and shows no flicker of it.
    typing_after: float = Field(default=0.5, ge=0)
    interaction_token_ttl: float = Field(default=15 * 60, gt=0)  # Discord's interaction token lifetime
    interaction_margin: float = Field(default=60.0, ge=0)  # switch to channel messages this long before
    max_concurrent_turns: int = Field(default=32, ge=1)
    guild_ready_timeout: float = Field(default=2.0, ge=0)
    identify_window: float = Field(default=5.0, gt=0)  # Discord's IDENTIFY rate window; change only for tests
    login_backoff_base: float = Field(default=2.0, gt=0)  # first wait after a failed login or connection
    login_backoff_max: float = Field(default=600.0, gt=0)
    shutdown_grace: float = Field(default=10.0, ge=0)  # let running replies finish on shutdown

    @field_validator("shard_ids", "listen_channels", "follow_threads", "allowed_bots", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        return _id_set(value)

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL such as https://discord.com/api/v10")
        return value

    @model_validator(mode="after")
    def _shards(self) -> DiscordSettings:
        if self.shard_leases and self.shard_ids:
            raise ValueError("DISCORD_SHARD_LEASES picks the shard ids itself: unset DISCORD_SHARD_IDS")
        if self.shard_heartbeat * 2 > self.shard_lease:
            raise ValueError("DISCORD_SHARD_LEASE must be at least two DISCORD_SHARD_HEARTBEATs")
        if self.shard_ids and self.shard_count is None:
            raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT")
        if self.shard_count is not None and any(i >= self.shard_count for i in self.shard_ids):
            raise ValueError("every id in DISCORD_SHARD_IDS must be below DISCORD_SHARD_COUNT")
        return self

    @property
    def wants_message_content(self) -> bool:
        return self.message_content or bool(self.listen_channels)

    @property
    def api_overridden(self) -> bool:
        return self.api_url != DEFAULT_API_URL

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides bot.toml (passed as init values): an operator can change a deployed bot.
        return env_settings, dotenv_settings, init_settings, file_secret_settings


def load_discord_settings(table: Mapping[str, Any] | None = None) -> DiscordSettings:
    """Settings from the environment (and ``.env``) over the bot's ``[discord]`` table."""
    table = dict(table or {})
    bad = sorted(_ENV_ONLY & set(table))
    if bad:
        raise ConfigError(
            f"bot.toml [discord]: {', '.join(bad)} must come from the environment (DISCORD_TOKEN)"
        )
    unknown = sorted(set(table) - set(DiscordSettings.model_fields))
    if unknown:
        raise ConfigError(f"bot.toml [discord]: unknown setting(s): {', '.join(unknown)}")
    try:
        return DiscordSettings(**table)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = "_".join(str(part) for part in err["loc"]).upper()
            problems.append(f"DISCORD_{loc}: {err['msg']}" if loc else str(err["msg"]))
        raise ConfigError(f"invalid Discord setting: {'; '.join(problems)}") from None
