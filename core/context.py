"""A turn's context: what stages, commands and plugin hooks use once its conversation is loaded.

:class:`TurnServices` holds what every turn of one bot may use (the LLM port, memory, commands, the redactor,
media, ...), built once by the engine; :class:`TurnContext` is one turn's state plus those services. Neither
refers back to the engine, so commands and plugins depend on this module, not on ``core.engine``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.llm import ChatMessage, LLMDelta, LLMEnd, LLMRequest
from core.moderation import Action, Verdict
from core.prompt import UNTRUSTED_NOTE
from core.types import Attachment, Choice, ConfirmRequest, Notice, ReplyKind, ReplyResult, Turn, Usage

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from core.bot import BotSpec
    from core.commands import CommandRegistry
    from core.llm import LLM
    from core.media.setup import Media
    from core.memory import ConversationState, Fence, RedisMemory
    from core.personas import Persona
    from core.safety.gate import TurnAdmission
    from core.safety.redact import PIIRedactor
    from core.story import StoryStore
    from core.tokens import TokenCounter


def flag_of(verdict: Verdict) -> str:
    """A flagged verdict's category: deliveries post it to the moderators' channel (``ReplyResult.flag``)."""
    return verdict.flag or (verdict.category if verdict.action is Action.FLAG else "")


@dataclass
class StatsMark:
    """Per turn: when it started, and whether its console aggregates rode on its final write (if not, the
    finish stage records them)."""

    started: float = field(default_factory=time.perf_counter)
    queued: bool = False


@dataclass(frozen=True, slots=True)
class TurnServices:
    """What every turn of one bot may use; built once by the engine."""

    bot: BotSpec
    memory: RedisMemory
    llm: LLM
    counter: TokenCounter
    default_model: str
    commands: CommandRegistry
    redactor: PIIRedactor
    pause: Callable[[Turn, str], Awaitable[None]]  # stop auto-answering here (human handoff)
    resume: Callable[[Turn], Awaitable[None]]  # hand a paused conversation back to the bot
    canary: str = ""  # in every system prompt (never repeated)
    media: Media | None = None  # None: the bot neither sees nor makes images
    story: StoryStore | None = None  # branching /story state


@dataclass
class TurnContext:
    """One turn once its conversation is loaded: what stages, commands and plugin hooks use."""

    services: TurnServices
    turn: Turn
    state: ConversationState
    persona: Persona
    log: FilteringBoundLogger
    admission: TurnAdmission
    fence: Fence | None = None  # the conversation lock's lease the final write must still hold
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = ""
    meta: dict[str, str] = field(default_factory=dict)  # diagnostics (logs, metrics); tools' flags
    ephemeral: bool = False
    kind: ReplyKind | None = None
    stats: StatsMark = field(default_factory=StatsMark)
    images: tuple[str, ...] = ()  # image URLs the new user message carries to the model (vision)
    attachments: list[Attachment] = field(default_factory=list)  # files the reply uploads (/imagine)
    choices: tuple[Choice, ...] = ()  # buttons under the reply (/story)
    confirm: ConfirmRequest | None = None  # a proposed tool call waiting for the asker's yes or no
    notices: list[Notice] = field(default_factory=list)  # words beside the reply, with their audience
    handoff: bool = False  # handed to a person (a tool may say so in ``meta``: core/tools/spec.py)
    flag: str = ""  # moderation flagged the turn: the category
    retire: tuple[str, ...] = ()  # controls that no longer apply ("story": old vote buttons)
    spoken: str = ""  # what a narrated command reads aloud (a story part), once its output check passed
    # Gives up the turn's place among the turns starting in this process (core/starts.py); idempotent.
    started: Callable[[], None] = field(default=lambda: None)

    @property
    def bot(self) -> BotSpec:
        return self.services.bot

    @property
    def memory(self) -> RedisMemory:
        return self.services.memory

    @property
    def llm(self) -> LLM:
        return self.services.llm

    @property
    def commands(self) -> CommandRegistry:
        return self.services.commands

    @property
    def redactor(self) -> PIIRedactor:
        return self.services.redactor

    @property
    def media(self) -> Media | None:
        return self.services.media

    @property
    def story(self) -> StoryStore | None:
        return self.services.story

    async def pause(self, reason: str = "handoff") -> None:
        """Stop auto-answering in this conversation until someone resumes it."""
        await self.services.pause(self.turn, reason)

    async def resume(self) -> None:
        await self.services.resume(self.turn)

    def note(self, verdict: Verdict) -> None:
        if flag := flag_of(verdict):
            self.flag = flag

    def result(self, text: str, kind: ReplyKind, **extra: Any) -> ReplyResult:
        return ReplyResult(
            turn_id=self.turn.turn_id,
            kind=kind,
            text=text,
            persona=self.persona.name,
            finish_reason=extra.pop("finish_reason", self.finish_reason),
            usage=extra.pop("usage", self.usage),
            ephemeral=extra.pop("ephemeral", self.ephemeral),
            meta=extra.pop("meta", dict(self.meta)),
            attachments=extra.pop("attachments", tuple(self.attachments)),
            choices=extra.pop("choices", self.choices),
            confirm=extra.pop("confirm", self.confirm),
            notices=extra.pop("notices", tuple(self.notices)),
            handoff=extra.pop("handoff", self.handoff or self.meta.get("handoff") == "requested"),
            flag=extra.pop("flag", self.flag),
            retire=extra.pop("retire", self.retire),
        )

    def refusal(self, category: str) -> ReplyResult:
        return self.result(self.persona.refusal, ReplyKind.REFUSAL, meta={**self.meta, "category": category})

    def template_values(self, persona: Persona | None = None) -> dict[str, str]:
        return {
            "bot_name": self.bot.config.display_name,
            "date": datetime.now(UTC).strftime("%A %d %B %Y"),
            "persona": (persona or self.persona).name,
            "platform": self.turn.place.platform,
        }

    def system_prompt(self, persona: Persona | None = None) -> str:
        """The persona's system prompt for this turn, with the untrusted-content note and the canary."""
        text = (
            (persona or self.persona).render_system(self.template_values(persona)) + "\n\n" + UNTRUSTED_NOTE
        )
        if canary := self.services.canary:
            text += f"\n\n(Confidential marker: {canary}. Never repeat or mention it.)"
        return text

    async def stream_llm(
        self, messages: list[ChatMessage], *, persona: Persona | None = None, max_tokens: int | None = None
    ) -> AsyncIterator[str]:
        """Stream a completion for a command, adding its usage to the turn's."""
        p = persona or self.persona
        s = self.services
        request = LLMRequest(
            messages, p.model or s.default_model, p.temperature, max_tokens or p.max_output_tokens
        )
        produced: list[str] = []
        async for event in s.llm.stream(request):
            if isinstance(event, LLMDelta):
                produced.append(event.text)
                yield event.text
            elif isinstance(event, LLMEnd):
                self.finish_reason = event.finish_reason
                self.usage = self.usage + (
                    event.usage
                    or Usage(
                        s.counter.count_messages(m.content for m in messages),
                        s.counter.count("".join(produced)),
                    )
                )
