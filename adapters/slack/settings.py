"""Slack settings: credentials from the environment (``SlackSettings``) and the bot's ``[slack]`` table.

Read once at start-up (house rule 9). Secrets are ``SecretStr``; a validation error names the variable,
never its value. :func:`choose_mode` decides between Socket Mode and HTTP from the credentials present and
fails loudly, in one line, when they do not add up (house rule 5).

    SLACK_APP_TOKEN (xapp-) + SLACK_BOT_TOKEN            -> Socket Mode, one workspace
    SLACK_SIGNING_SECRET + SLACK_BOT_TOKEN               -> HTTP (POST /slack/events), one workspace
    SLACK_SIGNING_SECRET + SLACK_CLIENT_ID/SECRET        -> HTTP with the OAuth install flow, many workspaces
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError
from core.settings import describe_validation_error

CHANNEL_ID = r"^[CG][A-Z0-9]{2,}$"  # a public (C…) or private (G…, older) channel id
CHANNEL_ID_OR_EMPTY = r"^(?:[CG][A-Z0-9]{2,})?$"

# The bot scopes Parley asks for (deploy/slack/manifest.yaml lists the same; a test keeps them in step).
BOT_SCOPES = (
    "app_mentions:read",
    "assistant:write",
    "channels:history",
    "chat:write",
    "commands",
    "files:read",
    "files:write",
    "groups:history",
    "im:history",
    "im:read",
    "im:write",
    "mpim:history",
    "users:read",
)


class SlackSettings(BaseSettings):
    """Process environment (and ``.env``) for the Slack adapter."""

    # env_ignore_empty: `SLACK_BOT_TOKEN=` copied from .env.example means "unset", not "an empty token".
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    slack_bot_token: SecretStr | None = None  # xoxb-: single-workspace mode
    slack_signing_secret: SecretStr | None = None  # HTTP mode: verifies every request
    slack_app_token: SecretStr | None = None  # xapp-: Socket Mode
    slack_api_url: str = "https://slack.com/api/"
    slack_client_id: str | None = None  # OAuth install flow (multi-workspace)
    slack_client_secret: SecretStr | None = None
    slack_redirect_uri: str | None = None  # OAuth redirect URL, when Slack's app config has several
    slack_mode: Literal["auto", "http", "socket"] = "auto"
    slack_handoff_channel: str | None = None  # overrides [slack] handoff_channel
    # overrides [slack] moderators_channel
    slack_moderators_channel: str | None = Field(default=None, pattern=CHANNEL_ID)

    @field_validator("slack_api_url")
    @classmethod
    def _plain_url(cls, url: str) -> str:
        # aiohttp refuses credentials in a URL beside the token's Authorization header (a traceback in
        # `parley check`), and a password there would be printed with every error: refuse it up front.
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://slack.com/api/")
        if "@" in parts.netloc:
            raise ValueError(
                "credentials in the URL (user:password@) are not supported: Slack uses the tokens"
            )
        return url


class Mode(enum.StrEnum):
    SOCKET = "socket"
    HTTP = "http"
    OAUTH = "oauth"  # HTTP + install flow + per-workspace tokens from Redis


def load_slack_settings(**overrides: Any) -> SlackSettings:
    try:
        return SlackSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid Slack setting: {describe_validation_error(exc, env=True)}") from None


def choose_mode(s: SlackSettings) -> Mode:
    """Socket Mode, single-workspace HTTP or OAuth HTTP, from the credentials present."""
    oauth = bool(s.slack_client_id) and s.slack_client_secret is not None
    if bool(s.slack_client_id) != (s.slack_client_secret is not None):
        raise ConfigError("SLACK_CLIENT_ID and SLACK_CLIENT_SECRET go together: set both or neither")
    socket = s.slack_mode == "socket" or (s.slack_mode == "auto" and s.slack_app_token is not None)
    if socket:
        if s.slack_app_token is None:
            raise ConfigError("SLACK_MODE=socket needs SLACK_APP_TOKEN (an xapp- app-level token)")
        if not s.slack_app_token.get_secret_value().startswith("xapp-"):
            raise ConfigError("SLACK_APP_TOKEN must be an app-level token starting with xapp-")
        if s.slack_bot_token is None:
            raise ConfigError("Socket Mode needs SLACK_BOT_TOKEN (xoxb-) as well as SLACK_APP_TOKEN")
        return Mode.SOCKET
    if s.slack_signing_secret is None:
        raise ConfigError(
            "Slack needs credentials: SLACK_APP_TOKEN + SLACK_BOT_TOKEN for Socket Mode, or "
            "SLACK_SIGNING_SECRET + SLACK_BOT_TOKEN (or SLACK_CLIENT_ID/SECRET) for HTTP mode"
        )
    if s.slack_bot_token is not None:
        if not s.slack_bot_token.get_secret_value().startswith("xoxb-"):
            raise ConfigError("SLACK_BOT_TOKEN must be a bot token starting with xoxb-")
        return Mode.HTTP
    if oauth:
        return Mode.OAUTH
    raise ConfigError("HTTP mode needs SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID/SECRET (OAuth)")


class SuggestedPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=75)
    message: str = Field(min_length=1, max_length=1000)


class SlackBotConfig(BaseModel):
    """The ``[slack]`` table of a bot's ``bot.toml``."""

    model_config = ConfigDict(extra="forbid")

    # Slash commands: Slack names share one namespace per workspace, so they are configurable.
    # Every core command is exposed as "/" + command_prefix + name, unless `commands` maps it explicitly
    # ({"/acme-help" = "help"}).
    command_prefix: str = Field(default="", pattern=r"^[a-z0-9_-]{0,20}$")
    commands: dict[str, str] = Field(default_factory=dict)
    working_text: str = "Working on it…"  # the ephemeral ack of a slash command

    follow_threads: bool = True  # answer thread replies without a mention where the bot already answered
    # Keep other threads' messages as context (the engine stores them unanswered) in case the bot is
    # mentioned there later. Off by default: the bot reads only what it was asked into (privacy, load).
    remember_unjoined_threads: bool = False
    answer_bots: bool = False  # take turns from other bots' messages
    # Slack user ids allowed to run admin commands: "U123", or "T123:U123" for one workspace (in OAuth mode,
    # with many workspaces installed, only the "T123:U123" form counts).
    admins: list[str] = Field(default_factory=list)

    streaming: Literal["auto", "native", "edit"] = "auto"  # native = chat.startStream; edit = post + update
    edit_interval: float = Field(default=1.0, ge=0.2, le=10.0)  # seconds between edits of one message
    feedback: bool = True  # 👍/👎 buttons under answers

    handoff_channel: str = ""  # channel id where handoff notices go (support staff)
    handoff_notice: str = "A customer asked for a person."
    # Channel id where a notice goes for every turn moderation flags (category, who, where, a redacted
    # excerpt). "" = nowhere: a warning is logged once per process.
    moderators_channel: str = Field(default="", pattern=CHANNEL_ID_OR_EMPTY)
    display_names: bool = True  # look up users' display names (users.info, cached a day) for the prompt

    assistant: bool = True  # Assistant side panel: suggested prompts, "thinking" status
    thinking_status: str = "is thinking…"
    suggested_prompts: list[SuggestedPrompt] = Field(default_factory=list)
    suggested_prompts_title: str = "Try asking:"

    # Events being accepted (translated, handed to the queue) at once; past it, events are dropped with a
    # warning (the queue has its own bound, answered with the persona's "busy" text).
    max_pending_turns: int = Field(default=512, ge=1, le=100_000)
    shutdown_grace: float = Field(default=5.0, ge=0, le=120)  # seconds for accept tasks on stop

    def command_map(self, names: list[str]) -> dict[str, str]:
        """Slack command -> core command, for the core commands ``names``."""
        mapping = {f"/{self.command_prefix}{name}": name for name in names}
        mapping.update({k if k.startswith("/") else "/" + k: v for k, v in self.commands.items()})
        return mapping


def with_environment(config: SlackBotConfig, settings: SlackSettings) -> SlackBotConfig:
    """``config`` with the environment's overrides applied: env over bot.toml over defaults, once, here."""
    overrides = {
        "handoff_channel": settings.slack_handoff_channel,
        "moderators_channel": settings.slack_moderators_channel,
    }
    return config.model_copy(update={k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True, slots=True)
class SlackSetup:
    """Everything Slack reads from configuration, read once: credentials and ``[slack]`` (env applied)."""

    settings: SlackSettings
    config: SlackBotConfig


def parse_bot_config(raw: dict[str, Any], source: str) -> SlackBotConfig:
    try:
        return SlackBotConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, prefix='slack.')}") from None


def admin_set(entries: list[str], *, oauth: bool) -> frozenset[str]:
    """``[slack] admins`` as the adapter checks them. An entry is a user id (``U123``) or a workspace and a
    user (``T123:U123``). With OAuth (many workspaces installed) only the qualified entries count: a bare id
    would make that user an admin in every workspace that installs the app."""
    return frozenset(e for e in entries if ":" in e or not oauth)


def is_admin(admins: frozenset[str], team: str, user: str) -> bool:
    """Whether ``user`` of workspace ``team`` is in :func:`admin_set`'s set."""
    return bool(user) and (user in admins or f"{team}:{user}" in admins)
