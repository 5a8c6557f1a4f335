"""A bot's definition: its ``bot.toml``, personas, reference knowledge and optional plugin.

``bot.toml`` is validated into :class:`BotConfig`; a wrong field is a :class:`ConfigError` naming it.
Platform tables (``[slack]``, ``[discord]``) stay raw here: each adapter validates its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError
from core.settings import ModelLimits, describe_validation_error
from core.tools.config import ToolsConfig

MAX_INPUT_CHARS = 40_000  # the upper bound of [limits] max_input_chars

if TYPE_CHECKING:
    from core.personas import Persona
    from core.plugin import Plugin


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


class RateWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=1_000_000)  # at most this many turns ...
    seconds: float = Field(gt=0, le=7 * 86_400)  # ... in any window of this length (sliding)


class LimitsConfig(BaseModel):
    """Abuse and cost limits (core/safety): on by default; a count or quota of 0 switches one off."""

    model_config = ConfigDict(extra="forbid")

    # bounded: every rule is linear, but a check still costs ~1-15 ms per 10 KB (make bench-safety); 40,000 is
    # Slack's own message limit
    max_input_chars: int = Field(default=4_000, ge=1, le=MAX_INPUT_CHARS)
    user_rate: list[RateWindow] = Field(
        default_factory=lambda: [RateWindow(count=5, seconds=10), RateWindow(count=60, seconds=3_600)]
    )
    channel_rate: list[RateWindow] = Field(default_factory=lambda: [RateWindow(count=30, seconds=60)])
    # Commands that do not call the LLM (/help, /forget, /reset ...): a budget of their own per user.
    command_rate: list[RateWindow] = Field(default_factory=lambda: [RateWindow(count=20, seconds=60)])
    user_daily_tokens: int = Field(default=200_000, ge=0)  # prompt + completion tokens per quota window
    workspace_daily_tokens: int = Field(default=5_000_000, ge=0)  # per workspace (Slack) or guild (Discord)
    quota_window_seconds: int = Field(default=86_400, ge=1)  # epoch-aligned: a day ends at 00:00 UTC
    max_concurrent_per_workspace: int = Field(default=10, ge=0)  # LLM generations at once; 0: no limit
    generation_lease_seconds: float = Field(default=180, gt=0)  # a dead replica's slot frees after this
    llm_commands: list[str] = Field(default_factory=lambda: ["story"])  # commands that count like chat turns
    exempt_platforms: list[str] = Field(default_factory=lambda: ["console"])  # your own terminal
    exempt_admins: bool = False
    rate_limited_text: str = "You're sending messages faster than I can answer. Please try again in {retry}."
    channel_rate_limited_text: str = "This channel is keeping me very busy. Please try again in {retry}."
    quota_text: str = "You've reached your usage limit for today. It resets in {retry}."
    workspace_quota_text: str = "This workspace has reached its usage limit for today. It resets in {retry}."
    busy_text: str = ""  # waited past max_queue_seconds for a generation slot; empty: the persona's ``busy``
    # Over max_concurrent_per_workspace a turn waits in line (fair across users); the user is told once when
    # the expected wait is over busy_after_seconds; the turn ends "busy" only past max_queue_seconds.
    busy_after_seconds: float = Field(default=60, ge=0)
    max_queue_seconds: float = Field(default=600, gt=0)
    waiting_text: str = "Lots of people are talking to me right now: I'll answer you in about {wait}."
    # What one user, and one conversation, may add to Redis per quota window (memory: chat, remembered
    # commands, image notes; unanswered context), in bytes of stored text; 0 switches one off.
    user_daily_stored_bytes: int = Field(default=1_000_000, ge=0)
    conversation_daily_stored_bytes: int = Field(default=2_000_000, ge=0)
    stored_text: str = "I can't keep any more of what you send me today. It resets in {retry}."
    conversation_stored_text: str = (
        "This conversation has reached what I can keep today. It resets in {retry}."
    )


class LLMLimitsConfig(BaseModel):
    """The provider's rate limits where it sends no headers (PARLEY_LLM_RPM/_TPM/_MODEL_LIMITS override)."""

    model_config = ConfigDict(extra="forbid")

    rpm: int = Field(default=0, ge=0)  # requests per minute, every model; 0 = unknown
    tpm: int = Field(default=0, ge=0)  # tokens per minute, every model; 0 = unknown
    models: dict[str, ModelLimits] = Field(default_factory=dict)  # per model, instead of rpm/tpm


ModerationAction = Literal["allow", "refuse", "redact", "flag"]


class ModerationConfig(BaseModel):
    """The moderation profile (core/safety/profiles.py) and overrides of any part of it."""

    model_config = ConfigDict(extra="forbid")

    profile: str = "standard"  # strict | standard | relaxed | local
    blocked_patterns: list[str] = Field(default_factory=list)  # regexes, checked on input and output
    blocked_category: str = "blocked_pattern"
    endpoint: bool | None = None  # use the moderation endpoint (None: as the profile says)
    on_error: Literal["open", "closed"] | None = None  # endpoint down or slow: let through, or refuse
    timeout_seconds: float | None = Field(default=None, gt=0, le=30)
    stream_checks: Literal["local", "full"] | None = None  # while streaming: local rules, or endpoint too
    flag_refusals: bool | None = None  # report every refusal to the moderators, not only "flag" actions
    thresholds: dict[str, float] = Field(default_factory=dict)  # endpoint category -> score (0-1)
    actions: dict[str, ModerationAction] = Field(default_factory=dict)  # category -> action, input and output
    output_actions: dict[str, ModerationAction] = Field(default_factory=dict)  # category -> action on replies
    link_domains: list[str] = Field(default_factory=list)  # links to these (and subdomains) always pass
    canary: bool = True  # a random marker in every system prompt; a reply containing it is refused
    # Send the LLM request while the input's verdict is pending (it is read only after an allow; a refused
    # or rewritten input cancels it): the moderation round trip leaves the reply's first-token time, but the
    # provider then sees inputs the bot refuses (README "Moderation before the request").
    early_llm_request: bool = False
    events_max: int = Field(default=10_000, ge=100, le=10_000_000)  # moderation events kept in Redis

    @model_validator(mode="after")
    def _scores(self) -> ModerationConfig:
        for name, value in self.thresholds.items():
            if not 0 <= value <= 1:
                raise ValueError(f"thresholds.{name}: must be between 0 and 1")
        return self


class AccessConfig(BaseModel):
    """Who may talk to the bot. Entries are ids, or ``platform:id``; an empty allow-list allows everyone."""

    model_config = ConfigDict(extra="forbid")

    allow_workspaces: list[str] = Field(default_factory=list)  # Slack team ids / Discord guild ids
    deny_workspaces: list[str] = Field(default_factory=list)
    allow_channels: list[str] = Field(default_factory=list)
    deny_channels: list[str] = Field(default_factory=list)
    allow_users: list[str] = Field(default_factory=list)
    deny_users: list[str] = Field(default_factory=list)
    ignore_bots: bool = True  # never answer other bots (no bot-to-bot loops)


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # what the redactor removes before anything is stored (and, per profile, before the LLM)
    redact: list[str] = Field(default_factory=lambda: ["email", "phone", "card", "iban", "gov_id", "secret"])
    extra_detectors: list[str] = Field(default_factory=list)  # "package.module:factory" for heavier detectors
    forget_command: bool = True  # /forget: a user deletes everything stored about them


class ImagesConfig(BaseModel):
    """``[images]``: images in (attachments for vision personas) and out (``/imagine``)."""

    model_config = ConfigDict(extra="forbid")

    max_bytes: int = Field(default=5_000_000, ge=1_000, le=50_000_000)  # per attachment, checked on the bytes
    max_per_message: int = Field(default=4, ge=1, le=16)  # more are ignored (and said so)
    types: list[str] = Field(default_factory=lambda: ["image/png", "image/jpeg", "image/gif", "image/webp"])
    fetch_timeout_seconds: float = Field(default=15, gt=0, le=120)
    # Image hosts allowed despite a private or loopback address (core/net/guard.py): names, IPs, networks.
    fetch_allow: list[str] = Field(default_factory=list)
    model: str = "gpt-image-1"  # the Images API model for /imagine (PARLEY_IMAGE_MODEL overrides)
    size: str = "1024x1024"
    timeout_seconds: float = Field(default=120, gt=0, le=600)
    user_daily: int = Field(default=10, ge=0)  # /imagine images per user per quota window; 0: no limit
    workspace_daily: int = Field(default=100, ge=0)  # per Slack workspace / Discord server
    quota_window_seconds: int = Field(default=86_400, ge=1)  # epoch-aligned: a day ends at 00:00 UTC


class AudioConfig(BaseModel):
    """``[audio]``: speech out (``/speak``, narrated stories) and voice messages in (transcribed)."""

    model_config = ConfigDict(extra="forbid")

    narrate: bool = False  # every /story part is also read aloud (one story: ``/story ... --narrate``)
    listen: bool = True  # voice messages and audio clips are transcribed and answered as text
    voice: str = "alloy"  # the default voice; a persona's ``voice`` wins
    format: Literal["mp3", "opus", "wav"] = "mp3"  # opus: an OGG/Opus file
    max_speak_chars: int = Field(default=2_000, ge=1, le=4_096)  # the speech API takes 4,096 at most
    max_bytes: int = Field(default=10_000_000, ge=1_000, le=25_000_000)  # per clip in (the API's 25 MB)
    max_seconds: float = Field(default=180, gt=0, le=1_800)  # per clip in, where its length is known
    types: list[str] = Field(
        default_factory=lambda: [
            "audio/ogg",
            "audio/mpeg",
            "audio/wav",
            "audio/x-wav",
            "audio/webm",
            "audio/mp4",
            "audio/flac",
        ]
    )
    timeout_seconds: float = Field(default=60, gt=0, le=600)
    user_daily_speech: int = Field(default=20, ge=0)  # /speak and narrations per user per quota window
    workspace_daily_speech: int = Field(default=200, ge=0)  # per Slack workspace / Discord server
    user_daily_clips: int = Field(default=30, ge=0)  # clips transcribed per user per quota window
    workspace_daily_clips: int = Field(default=300, ge=0)
    quota_window_seconds: int = Field(default=86_400, ge=1)


class StoryConfig(BaseModel):
    """``[story]``: the branching, voted ``/story`` (core/story.py); off: one story in one reply."""

    model_config = ConfigDict(extra="forbid")

    branching: bool = False
    vote_seconds: float = Field(default=30, ge=1, le=3_600)  # a channel's vote window per part
    choices: int = Field(default=3, ge=2, le=3)
    part_words: int = Field(default=150, ge=40, le=600)
    cover: bool = False  # a cover picture for a new story (the Images API; counts against image quotas)


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
    llm_limits: LLMLimitsConfig = Field(default_factory=LLMLimitsConfig)
    moderation: ModerationConfig = Field(default_factory=ModerationConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)  # tools and MCP servers (core/tools/config.py)
    kb: dict[str, Any] | None = None  # the knowledge base (core/kb validates it: KbConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    story: StoryConfig = Field(default_factory=StoryConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    slack: dict[str, Any] = Field(default_factory=dict)
    discord: dict[str, Any] = Field(default_factory=dict)
    console: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _display(self) -> BotConfig:
        if not self.display_name:
            self.display_name = self.name.capitalize()
        return self


@dataclass(frozen=True)
class BotSpec:
    name: str
    folder: Path
    config: BotConfig
    personas: Mapping[str, Persona]
    knowledge: str = ""
    plugin: Plugin | None = None  # the folder's plugin.py (core/plugin.py: the plugin API)

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
