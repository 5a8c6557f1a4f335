"""Frozen value types that flow through the engine.

Adapters build a :class:`Turn` from a platform event; the engine answers with a stream of
:data:`ReplyEvent` values: text deltas, an occasional whole-text replacement (when output moderation
takes back what was shown), and one final :class:`ReplyDone`. The reply's types live in :mod:`core.reply`
(the one contract between the engine and every delivery); they are re-exported here for old imports.
"""

from __future__ import annotations

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
    ``is_direct``: a direct conversation (a DM, the terminal), as the adapter knows it; core never guesses it
    from a platform's ids. Not part of the place's identity (equality, hash, conversation id).
    """

    platform: str
    workspace: str
    channel: str
    thread: str = ""
    is_direct: bool = field(default=False, compare=False)

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


# The reply contract, re-exported: most modules import these from here.
from core.reply import (  # noqa: E402
    Attachment,
    Audience,
    Choice,
    Citation,
    ConfirmRequest,
    Notice,
    ReplyDelta,
    ReplyDone,
    ReplyEvent,
    ReplyKind,
    ReplyNotice,
    ReplyReplace,
    ReplyResult,
    Usage,
)

__all__ = [
    "DIRECT_WORKSPACE",
    "Attachment",
    "Audience",
    "Author",
    "Choice",
    "Citation",
    "CommandCall",
    "ConfirmRequest",
    "ImageRef",
    "Notice",
    "Place",
    "ReplyDelta",
    "ReplyDone",
    "ReplyEvent",
    "ReplyKind",
    "ReplyNotice",
    "ReplyReplace",
    "ReplyResult",
    "Turn",
    "Usage",
]
