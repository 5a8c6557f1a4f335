"""The reply contract: what the engine answers a turn with, and folding a reply stream.

A reply is a stream of :data:`ReplyEvent` values: deltas append, a replace swaps everything shown so far, a
:class:`ReplyNotice` is a word beside the reply, and the one :class:`ReplyDone` carries the typed
:class:`ReplyResult`. Every delivery (``adapters/common/deliver.py``) shows a result's parts in the same
order: text, files, choices, confirmation, notices, handoff, flag report, retired controls. ``meta`` holds
diagnostics for logs and metrics only: no adapter reads it.

:class:`ReplyFold` is the one place that knows what a stream amounts to: adapters render with it, queue
workers watch with it, tests read what a user saw with it. This module imports nothing of Parley's
(:mod:`core.types` re-exports it).
"""

from __future__ import annotations

import enum
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_EMPTY: Mapping[str, str] = MappingProxyType({})
_CHOICE_VALUE = re.compile(r"^([0-9a-f]{1,32}):([0-9]{1,6}):([1-9])$")


class ReplyKind(enum.StrEnum):
    ANSWER = "answer"  # the LLM answered
    COMMAND = "command"  # a command answered
    REFUSAL = "refusal"  # moderation or a limit refused the turn
    ERROR = "error"  # something failed; the text is the persona's apology
    IGNORED = "ignored"  # nothing to show (duplicate delivery, unaddressed message, paused thread)


class Audience(enum.StrEnum):
    PRIVATE = "private"  # the asker alone (Slack ephemeral, Discord ephemeral follow-up)
    PUBLIC = "public"  # everyone in the conversation


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
class Attachment:
    """A file a reply carries (a generated image): the delivery uploads it beside the reply's text."""

    filename: str
    mime: str
    data: bytes = field(repr=False)
    title: str = ""  # alt text / file title; never the prompt's raw text in logs


@dataclass(frozen=True, slots=True)
class Choice:
    """One of a story part's choices: a button whose click is a vote for ``number`` in ``round`` of
    ``story``. :attr:`value` is what the button carries; :meth:`parse` reads it back (the only codec)."""

    story: str  # the story's id (hex): a click on another story's button is refused
    round: int
    number: int
    label: str = ""

    @property
    def value(self) -> str:
        return f"{self.story}:{self.round}:{self.number}"

    @classmethod
    def parse(cls, value: str) -> Choice | None:
        """The choice a button's value names (its label is not carried), or None for anything else."""
        m = _CHOICE_VALUE.match(value)
        return cls(m.group(1), int(m.group(2)), int(m.group(3))) if m else None


@dataclass(frozen=True, slots=True)
class ConfirmRequest:
    """A side-effecting tool call waiting for the asker's yes or no (buttons, or y/n in the terminal)."""

    id: str  # the pending call's id: a click names it (core/clicks.py)
    tool: str
    arguments: str  # the exact arguments, as canonical JSON text
    summary: str = ""  # one line for places that cannot show the whole question


@dataclass(frozen=True, slots=True)
class Notice:
    """A word beside the reply, for the asker alone or for everyone."""

    text: str
    audience: Audience = Audience.PUBLIC


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """What the engine concluded about a turn: the typed parts a delivery shows, in its steps' order."""

    turn_id: str
    kind: ReplyKind
    text: str
    persona: str = ""
    finish_reason: str = ""
    usage: Usage = field(default_factory=Usage)
    ephemeral: bool = False  # the whole reply is the asker's alone (where the platform allows it)
    citations: tuple[Citation, ...] = ()  # knowledge-base sources the reply cites, in number order
    attachments: tuple[Attachment, ...] = ()  # the reply's files, uploaded beside it (``/imagine``)
    choices: tuple[Choice, ...] = ()  # buttons under the reply (``/story``); a click is a vote
    confirm: ConfirmRequest | None = None  # a proposed tool call waiting for the asker
    notices: tuple[Notice, ...] = ()  # words beside the reply, each with its audience
    handoff: bool = False  # the conversation was handed to a person: tell the people who take over
    flag: str = ""  # moderation flagged the turn: the category the moderators are told
    retire: tuple[str, ...] = ()  # controls that no longer apply ("story": the old vote buttons)
    meta: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # diagnostics: logs and metrics only

    @property
    def files(self) -> tuple[Attachment, ...]:
        return self.attachments

    @property
    def question(self) -> ConfirmRequest | None:
        """The proposed call to show confirm / cancel for: none on a refused or failed reply (its question
        was never seen)."""
        return self.confirm if self.kind in (ReplyKind.ANSWER, ReplyKind.COMMAND) else None


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


class ReplyFold:
    """What a reply stream amounts to so far."""

    __slots__ = ("result", "shown")

    def __init__(self) -> None:
        self.shown = ""  # what the deltas and replaces have put on screen
        self.result: ReplyResult | None = None  # set by the stream's ReplyDone

    def add(self, event: ReplyEvent) -> ReplyEvent:
        """Fold one event in; returns it, so a pass-through reads ``yield fold.add(event)``."""
        if isinstance(event, ReplyDelta):
            self.shown += event.text
        elif isinstance(event, ReplyReplace):
            self.shown = event.text
        elif isinstance(event, ReplyDone):
            self.result = event.result
        return event

    @property
    def text(self) -> str:
        """The final text once the stream is done (the result's), else what has been shown."""
        return self.result.text if self.result is not None else self.shown

    def outcome(self) -> ReplyResult:
        """The result; a stream that ended without ReplyDone is an error carrying what was shown."""
        return self.result if self.result is not None else ReplyResult("", ReplyKind.ERROR, self.shown)

    def watch(self, events: AsyncIterator[ReplyEvent]) -> FoldingStream:
        """``events`` passed through unchanged, folded into this as they go by."""
        return FoldingStream(self, events)


class FoldingStream:
    """An async iterator over a reply stream that folds each event as it passes.

    A plain iterator, not an async generator: whoever owns ``events`` closes it, and this may be resumed
    after a consumer stopped early (a queue worker drains what its delivery left).
    """

    __slots__ = ("_events", "fold")

    def __init__(self, fold: ReplyFold, events: AsyncIterator[ReplyEvent]) -> None:
        self.fold = fold
        self._events = events

    def __aiter__(self) -> FoldingStream:
        return self

    async def __anext__(self) -> ReplyEvent:
        return self.fold.add(await anext(self._events))


async def fold_reply(events: AsyncIterator[ReplyEvent], *, first: ReplyEvent | None = None) -> ReplyFold:
    """Consume ``events`` (after ``first``, already taken from it) to the end."""
    fold = ReplyFold()
    if first is not None:
        fold.add(first)
    async for event in events:
        fold.add(event)
    return fold
