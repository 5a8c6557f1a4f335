"""Frozen value types that flow through the engine.

Adapters build a :class:`Turn` from a platform event; the engine answers with a stream of
:data:`ReplyEvent` values: text deltas, an occasional whole-text replacement (when output moderation
takes back what was shown), and one final :class:`ReplyDone`.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_EMPTY: Mapping[str, str] = MappingProxyType({})

DIRECT_WORKSPACE = "@me"
"""The workspace of direct messages outside any workspace (Discord DMs): budgets shared per workspace are
kept per user there."""


@dataclass(frozen=True, slots=True)
class Author:
    """Who wrote a message, as the platform names them."""

    id: str
    display_name: str = ""
    is_bot: bool = False
    is_admin: bool = False  # the adapter decides (Discord: Manage Server; Slack: configured admin list)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a conversation happens: ``(platform, workspace or guild, channel, thread)``.

    ``thread`` is empty when the platform has no thread for the message. DMs use the DM channel id.
    """

    platform: str
    workspace: str
    channel: str
    thread: str = ""

    @property
    def conversation_id(self) -> str:
        # '}' would end a Redis Cluster hash tag early, so it may not appear in any part.
        parts = (self.platform, self.workspace, self.channel, self.thread)
        return ":".join(p.replace("}", "_").replace(":", "_") for p in parts)


@dataclass(frozen=True, slots=True)
class CommandCall:
    """A command the adapter parsed from a native slash command (or the engine from ``/name args``)."""

    name: str
    args: str = ""
    options: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image attached to a user's message: where to fetch it, never its bytes (memory keeps this)."""

    url: str  # the platform's URL (Discord CDN, Slack ``url_private``)
    mime: str = ""  # as the platform declared it; checked again on the bytes
    size: int = 0  # bytes, as declared (0: unknown)
    name: str = ""
    caption: str = ""  # the platform's alt text or title, if any
    id: str = ""  # the platform's id of the attachment or file


@dataclass(frozen=True, slots=True)
class AudioRef:
    """A voice message or audio clip attached to a user's message: where to fetch it, never its bytes."""

    url: str
    mime: str = ""  # as the platform declared it; checked again on the bytes
    size: int = 0  # bytes, as declared (0: unknown)
    name: str = ""
    id: str = ""  # the platform's id of the attachment or file
    duration: float = 0.0  # seconds, as declared (Discord voice messages; 0: unknown)
    voice: bool = False  # recorded as a voice message (not an uploaded file)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file a reply carries (a generated image): the Delivery uploads it beside the reply's text."""

    filename: str
    mime: str
    data: bytes = field(repr=False)
    title: str = ""  # alt text / file title; never the prompt's raw text in logs


@dataclass(frozen=True, slots=True)
class Turn:
    """One incoming user message, platform-neutral."""

    author: Author
    place: Place
    text: str
    message_id: str = ""
    addressed: bool = True  # mention, DM, reply to the bot, slash command
    event_id: str = ""  # the platform's delivery id, for dedupe across retries and replicas
    command: CommandCall | None = None
    received_at: float = field(default_factory=time.time)
    turn_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    images: tuple[ImageRef, ...] = ()  # image attachments (vision personas see them)
    audio: tuple[AudioRef, ...] = ()  # voice messages and audio clips (transcribed into the text)


class ReplyKind(enum.StrEnum):
    ANSWER = "answer"  # the LLM answered
    COMMAND = "command"  # a command answered
    REFUSAL = "refusal"  # moderation or a limit refused the turn
    ERROR = "error"  # something failed; the text is the persona's apology
    IGNORED = "ignored"  # nothing to show (duplicate delivery, unaddressed message, paused thread)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens
        )


@dataclass(frozen=True, slots=True)
class Citation:
    """A source the reply cites as ``[number]`` (a knowledge-base page); adapters render it as a link."""

    number: int
    title: str
    url: str = ""  # empty: a local document with no public address (the title alone is shown)


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """What the engine concluded about a turn."""

    turn_id: str
    kind: ReplyKind
    text: str
    persona: str = ""
    finish_reason: str = ""
    usage: Usage = field(default_factory=Usage)
    ephemeral: bool = False  # only the asker should see it (Slack ephemeral, Discord ephemeral followup)
    meta: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # bot-specific flags, e.g. handoff
    citations: tuple[Citation, ...] = ()  # knowledge-base sources the reply cites, in number order
    attachments: tuple[Attachment, ...] = ()  # files to upload with the reply (``/imagine``)
    choices: tuple[str, ...] = ()  # "round:n:label": buttons a platform shows under the reply (``/story``)


@dataclass(frozen=True, slots=True)
class ReplyDelta:
    """More text to append to what has been shown."""

    text: str


@dataclass(frozen=True, slots=True)
class ReplyReplace:
    """Everything shown so far must be replaced by ``text`` (output moderation took it back)."""

    text: str


@dataclass(frozen=True, slots=True)
class ReplyNotice:
    """A word to the user beside the reply, not part of it (e.g. "lots of people are talking to me: about
    two minutes"). Shown as its own short message; never stored, never folded into the reply's text."""

    text: str


@dataclass(frozen=True, slots=True)
class ReplyDone:
    """The last event of every reply stream."""

    result: ReplyResult


ReplyEvent = ReplyDelta | ReplyReplace | ReplyNotice | ReplyDone
