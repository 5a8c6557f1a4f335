"""The turn engine: one :class:`Turn` in, a stream of :data:`ReplyEvent` out.

:meth:`Engine.reply` runs one turn through named stages (:meth:`Engine._stages` reads top to bottom)::

    admit     what needs no Redis: parse a command; open the turn's admission
    load      one pipelined read: memory tail + meta, dedupe, and admission's checks riding along
    route     greeting, context-only (unaddressed, paused), admission's judgement, size
    queue     over the generation cap: wait in a fair line for a slot (no round trip when one is free)
    command   a command's handler, or
    chat      moderate input -> plugin -> see (images for a vision persona, core/media/vision.py)
              -> retrieve (knowledge base: numbered reference chunks)
              -> generate (LLM stream or tool loop, output checked as it grows)
              -> check (final output moderation, citations) -> remember (one pipelined, fenced write,
              the console's daily aggregates riding on it)
    finish    admission settles, metrics, safety decisions, aggregates of turns that wrote nothing, the
              turn's log line

The engine keeps no conversation state in process memory: everything lives in Redis, so any replica can
take any turn. Per-turn state travels as arguments (the :class:`TurnContext`, the turn's admission, the
conversation lock's :class:`Fence`). :meth:`Engine.reply` never raises (except cancellation): every failure
ends the stream with a :class:`ReplyDone` whose text is the persona's apology.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import structlog

from core.bot import BotConfig, BotSpec
from core.commands import CommandRegistry
from core.context import StatsMark, TurnContext, TurnServices
from core.early import EarlyStream
from core.errors import ContextTooLong, LLMError, StoreError
from core.handoff import Handoffs
from core.llm import LLM, LLMDelta, LLMEnd, LLMRequest
from core.memory import ConversationState, Fence, NewMessage, RedisMemory
from core.moderation import Action, Verdict
from core.prompt import Prompt, build_prompt, summary_request, with_tools
from core.safety.attached import moderated_images
from core.starts import Starts
from core.tasks import TaskOwner
from core.tokens import TokenCounter
from core.tools.loop import ToolConfirm, ToolEvent
from core.tools.setup import WITHDRAWN, confirm_request
from core.types import (
    CommandCall,
    ReplyDelta,
    ReplyDone,
    ReplyEvent,
    ReplyKind,
    ReplyNotice,
    ReplyReplace,
    ReplyResult,
    Turn,
    Usage,
)

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from core.console.stats import DailyStats
    from core.kb.retrieve import KnowledgeBase, Retrieval
    from core.media.audio import Heard
    from core.media.setup import Media
    from core.ops.metrics import Metrics
    from core.safety.gate import TurnAdmission
    from core.safety.setup import Safety
    from core.story import StoryStore
    from core.tools.setup import Tools

log = structlog.get_logger("parley.engine")

MODERATION_STRIDE = 400  # re-check streaming output each time it grows by this many characters
FOLD_LOCK_SECONDS = 120


def _wants_narration(bot: BotSpec, call: CommandCall) -> bool:
    """``[audio] narrate`` for every story part, or ``/story ... --narrate`` for this one."""
    asked = call.options.get("narrate", "").lower()
    return asked in {"true", "yes", "1"} or (bot.config.audio.narrate and asked not in {"false", "no", "0"})


@dataclass
class Draft:
    """What the generate stage produced: the text shown so far and how the stream ended."""

    prompt: Prompt
    retrieval: Retrieval | None = None  # the knowledge base's chunks in the prompt (None: no base)
    parts: list[str] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: str = ""
    refused: Verdict | None = None  # output moderation stopped the stream
    error: LLMError | None = None  # the LLM failed (after a context-length retry, if one was possible)

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass(frozen=True, slots=True)
class Features:
    """The optional parts a bot may have; each stage that uses one skips it when it is None."""

    tools: Tools | None = None  # function tools and MCP servers (core/tools): the generate stage's loop
    stats: DailyStats | None = None  # the console's daily aggregates (core/console): on the final write
    knowledge: KnowledgeBase | None = None  # retrieval (core/kb): the retrieve stage
    media: Media | None = None  # images in (vision) and out (/imagine) (core/media): the see stage
    story: StoryStore | None = None  # branching /story state (core/story.py)


class Route(Enum):
    """How a turn is routed, decided before anything is read: it also tells admission whether the turn will
    be judged (so its checks ride on the read). Pausing is known only after the read: a paused conversation
    turns GREETING and ANSWER into a silent, remembered turn."""

    COMMAND = "command"  # a command: judged, then run (even while paused)
    GREETING = "greeting"  # a bare mention: the persona's hello, no LLM call, not judged
    IGNORE = "ignore"  # not addressed where the bot answers only when addressed, or nothing to answer
    ANSWER = "answer"  # words (or images, audio) to answer: judged, then the model

    @property
    def judged(self) -> bool:
        return self in (Route.COMMAND, Route.ANSWER)


def plan_route(turn: Turn, call: CommandCall | None, cfg: BotConfig) -> Route:
    """The one set of routing rules (``Engine.reply`` begins admission with it, ``_route`` follows it)."""
    if call is not None:
        return Route.COMMAND
    has_words = bool(turn.text.strip() or turn.images or turn.audio)
    if turn.addressed and not has_words:
        return Route.GREETING
    if not has_words or not (turn.addressed or cfg.answer_unaddressed):
        return Route.IGNORE
    return Route.ANSWER


class Engine:
    def __init__(
        self,
        *,
        bot: BotSpec,
        memory: RedisMemory,
        llm: LLM,
        safety: Safety,
        commands: CommandRegistry,
        tasks: TaskOwner,
        counter: TokenCounter,
        default_model: str,
        metrics: Metrics | None = None,
        features: Features | None = None,
        starts: Starts | None = None,
    ) -> None:
        features = features or Features()
        self.starts = starts or Starts(0)  # turns in their first stages at once (core/starts.py)
        self.bot = bot
        self.memory = memory
        self.llm = llm
        self.safety = safety  # moderation, redaction, admission, canary, event log
        self.commands = commands
        self.tasks = tasks  # owns the summary folds
        self.counter = counter
        self.default_model = default_model
        self.metrics = metrics
        self.tools = features.tools  # None: the model has no tools
        self.stats = features.stats
        self.knowledge = features.knowledge  # None: the whole knowledge file is the reference
        self.media = features.media  # None: attachments are ignored
        self.story = features.story
        self.handoffs = Handoffs(memory, self.stats, safety.events)
        self._log = log.bind(bot=bot.name)
        self.services = TurnServices(
            bot=bot,
            memory=memory,
            llm=llm,
            counter=counter,
            default_model=default_model,
            commands=commands,
            redactor=safety.redactor,
            pause=self.pause,
            resume=self.resume,
            canary=safety.canary,
            media=self.media,
            story=self.story,
        )

    # ------------------------------------------------------------------ public API

    async def reply(self, turn: Turn, *, fence: Fence | None = None) -> AsyncGenerator[ReplyEvent, None]:
        """Answer one turn as a stream of events ending with exactly one :class:`ReplyDone`. ``fence`` is
        the lease of the conversation lock the caller holds (queue worker, dispatcher), if any."""
        tlog = self._log.bind(
            turn_id=turn.turn_id, platform=turn.place.platform, conversation=turn.place.conversation_id
        )
        mark = StatsMark()
        # admit: a command is known before anything is read; the admission rides on the read and the write
        call = turn.command or self.commands.parse(turn.text)
        plan = plan_route(turn, call, self.bot.config)
        result: ReplyResult | None = None
        started = await self.starts.enter()  # a place among the turns starting now, until the hand-off
        try:
            async with self.safety.admission.admitting(turn, call, judged=plan.judged) as admission:
                try:
                    async for event in self._stages(turn, call, admission, fence, tlog, mark, started):
                        if isinstance(event, ReplyDone):
                            result = admission.result = event.result
                        yield event
                except asyncio.CancelledError:
                    raise
                except (
                    Exception
                ) as exc:  # task boundary: the user gets the persona's apology, the bot goes on
                    tlog.exception("turn_failed", error=type(exc).__name__)
                    persona = self.bot.persona(None)
                    result = ReplyResult(turn.turn_id, ReplyKind.ERROR, persona.error, persona=persona.name)
                    admission.result = result
                    yield ReplyDone(result)
        finally:  # admission is settled (leaving the block) before the turn's stats and metrics
            started()
            if result is not None:
                await self._finish(turn, result, time.perf_counter() - mark.started, tlog, mark)

    async def collect(self, turn: Turn) -> ReplyResult:
        """Run a turn to the end and return its result (for scripts, tests and non-streaming adapters)."""
        result: ReplyResult | None = None
        async for event in self.reply(turn):
            if isinstance(event, ReplyDone):
                result = event.result
        assert result is not None
        return result

    async def pause(self, turn: Turn, reason: str = "handoff") -> None:
        """Stop auto-answering in this conversation (human handoff) until :meth:`resume`."""
        await self.memory.set_meta(turn.place, {"paused": reason, "paused_by": turn.author.id})

    async def resume(self, turn: Turn, *, via: str = "command") -> None:
        """Hand the conversation back to the bot (``turn.author`` did it): core.handoff's one resume."""
        await self.handoffs.resume(turn.place, by=turn.author.id, via=via)

    async def aclose(self) -> None:
        await self.tasks.aclose()

    # ------------------------------------------------------------------ the stages

    async def _stages(
        self,
        turn: Turn,
        call: CommandCall | None,
        admission: TurnAdmission,
        fence: Fence | None,
        tlog: FilteringBoundLogger,
        mark: StatsMark,
        started: Callable[[], None],
    ) -> AsyncIterator[ReplyEvent]:
        state = await self._load(turn, admission, tlog, fence)
        if isinstance(state, ReplyResult):
            yield ReplyDone(state)
            return
        persona = self.bot.persona(state.persona)
        ctx = TurnContext(
            self.services, turn, state, persona, tlog, admission, fence, stats=mark, started=started
        )
        early = await self._route(ctx, call)
        if early is not None:
            if early.text and not early.ephemeral and early.kind is ReplyKind.ANSWER:
                yield ReplyDelta(early.text)
            yield ReplyDone(early)
            return
        async for event in self._queue(ctx):
            yield event
            if isinstance(event, ReplyDone):
                return
        steps = self._command(ctx, call) if call is not None else self._chat(ctx)
        async for event in steps:
            yield event

    async def _load(
        self, turn: Turn, admission: TurnAdmission, tlog: FilteringBoundLogger, fence: Fence | None = None
    ) -> ConversationState | ReplyResult:
        """Stage load: one round trip for the memory tail, the dedupe check and admission's checks."""
        cfg = self.bot.config
        dedupe_key = self.memory.keys.dedupe(turn.place, turn.event_id) if turn.event_id else None
        try:
            state = await self.memory.load(
                turn.place,
                tail=cfg.memory.window_max_messages,
                dedupe_key=dedupe_key,
                also=admission.queue_read,
                read=None if fence is None else fence.read,  # read with the lock (a queued turn on a cluster)
            )
        except StoreError as exc:
            tlog.error("memory_unavailable", error=str(exc), degrade=cfg.memory.when_unavailable)
            if cfg.memory.when_unavailable == "apologise":  # the conversation's persona is unknown
                default = self.bot.persona(None)
                meta = {"reason": "memory_unavailable"}
                return ReplyResult(
                    turn.turn_id, ReplyKind.ERROR, default.memory_error, default.name, meta=meta
                )
            return ConversationState(degraded=True)  # answer without memory
        admission.take_read(state.also)
        if state.duplicate:
            tlog.info("duplicate_event", event_id=turn.event_id)
            return ReplyResult(turn.turn_id, ReplyKind.IGNORED, "", meta={"reason": "duplicate"})
        return state

    async def _route(self, ctx: TurnContext, call: CommandCall | None) -> ReplyResult | None:
        """Stage route: turns that end before any command or LLM work (None: go on)."""
        turn, state, cfg = ctx.turn, ctx.state, self.bot.config
        if state.degraded:
            ctx.meta["memory"] = "unavailable"
        plan = plan_route(turn, call, cfg)  # the plan admission was begun with (judged or not)
        if plan is Route.GREETING and not state.paused:
            # A bare mention: say hello in the persona's voice, no LLM call, nothing to remember.
            return ctx.result(ctx.persona.greeting, ReplyKind.ANSWER, meta={"reason": "greeting"})
        if plan is Route.IGNORE:
            if not cfg.answer_unaddressed and cfg.memory.remember_others and turn.text.strip():
                await self._keep_as_context(ctx)
            reason = "empty" if cfg.answer_unaddressed else "not_addressed"
            return ctx.result("", ReplyKind.IGNORED, meta={"reason": reason})
        if call is None and state.paused:
            await self._keep_as_context(ctx)
            return ctx.result(
                "", ReplyKind.IGNORED, meta={"reason": "paused", "paused": state.meta["paused"]}
            )
        refused = await ctx.admission.judge(ctx)
        if refused is not None:
            return refused
        if len(turn.text) > cfg.limits.max_input_chars:  # judged first: refusals count against the rate
            ctx.log.info("input_too_long", chars=len(turn.text))
            return ctx.result(ctx.persona.too_long, ReplyKind.REFUSAL, meta={"reason": "too_long"})
        return None

    async def _queue(self, ctx: TurnContext) -> AsyncIterator[ReplyEvent]:
        """Stage queue: over the generation cap the turn waits in a fair line for a slot (the platform shows
        typing meanwhile). The user is told once when the wait looks long; only past ``max_queue_seconds``
        does the turn end "busy". Nothing to do (no round trip) when a slot came with the read."""
        admission = ctx.admission
        if not admission.place:
            return
        ctx.started()  # the wait may be long: let other turns start meanwhile
        limits = self.safety.admission.limits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.max_queue_seconds
        told = False
        ctx.log.info("waiting_for_slot", place=admission.place)
        while admission.place:
            wait = self.safety.admission.estimate(admission.place)
            if not told and wait > limits.busy_after_seconds:
                told = True
                yield ReplyNotice(admission.waiting_notice())
            if loop.time() >= deadline:
                ctx.log.warning("slot_wait_exceeded", place=admission.place)
                yield ReplyDone(admission.busy(ctx))
                return
            # The next in line asks often, those far back less: a quarter of the expected wait, 50 ms to 2 s.
            await asyncio.sleep(min(2.0, max(0.05, wait / 4)))
            await admission.poll_slot()

    async def _chat(self, ctx: TurnContext) -> AsyncIterator[ReplyEvent]:
        """Stage chat: listen, moderate input, plugin, generate, check, remember."""
        heard = None
        if ctx.turn.audio and self.media is not None:  # stage listen: a voice message's words are the turn's
            ctx.started()
            heard = await self.media.audio.listen(ctx.turn)
            if heard.reply:
                ctx.meta["reason"] = heard.reason
                kind = ReplyKind.ERROR if heard.reason == "audio_unreadable" else ReplyKind.REFUSAL
                yield ReplyDelta(heard.reply)
                yield ReplyDone(ctx.result(heard.reply, kind))
                return
            ctx.turn = replace(ctx.turn, text=f"{ctx.turn.text}\n{heard.text}".strip())
        early = self._open_early(ctx)
        ctx.started()  # the request is handed over (or the verdict, a network wait, comes first)
        try:
            async for event in self._answer(ctx, heard, early):
                yield event
        finally:
            if early is not None:  # refused, answered without the model, or another request was sent
                await early.aclose()

    def _open_early(self, ctx: TurnContext) -> EarlyStream[Any] | None:
        """Stage chat's early request (``[moderation] early_llm_request``): the request an allowed input
        will send, opened before the verdict so that the model's time to first token overlaps the input's
        moderation (:mod:`core.early`: nothing of it is read before the verdict). Only for text the local
        rules pass unchanged (secrets, blocked patterns never leave early), answered from the prompt alone:
        images, audio and a knowledge base need the verdict first."""
        turn = ctx.turn
        if not self.bot.config.moderation.early_llm_request or turn.images or turn.audio or self.knowledge:
            return None
        if not self.safety.moderator.remote_only(turn.text):  # local rules refuse or rewrite it: wait
            return None
        text = self.safety.redactor.redact(turn.text) if self.safety.redact_before_llm else turn.text
        request = self._request(ctx, self._prompt(ctx, text, ctx.persona.history_budget))
        if self.tools is not None and self.tools.offers(turn):
            return self.tools.loop.open_early(request, turn)
        return EarlyStream(request, self.llm.stream(request))

    async def _answer(
        self, ctx: TurnContext, heard: Heard | None, ahead: EarlyStream[Any] | None
    ) -> AsyncIterator[ReplyEvent]:
        """Stage chat after listening: moderate input, plugin, see, retrieve, generate, check, remember."""
        verdict = await self.safety.moderator.check_input(ctx.turn, ctx.turn.text)
        ctx.note(verdict)
        if verdict.action is Action.REFUSE:
            ctx.log.info("input_refused", category=verdict.category)
            yield ReplyDone(ctx.refusal(verdict.category))
            return
        if ctx.turn.images:  # file names and alt texts reach the model and memory too: judged like text
            refs, judged = await moderated_images(self.safety.moderator, ctx.turn)
            if judged is not None:
                ctx.note(judged)
                if judged.action is Action.REFUSE:
                    ctx.log.info("input_refused", category=judged.category, part="image_text")
                    yield ReplyDone(ctx.refusal(judged.category))
                    return
                ctx.turn = replace(ctx.turn, images=refs)
        user_text = (
            self.safety.redactor.redact(verdict.text) if self.safety.redact_before_llm else verdict.text
        )
        if heard is not None:
            # What the bot heard, quoted back (after moderation: a refused transcript is never echoed);
            # memory keeps the words and a reference to the clip, never the audio.
            yield ReplyNotice(f"🎙️ I heard: “{' '.join(verdict.text.split())[:500]}”")
            user_text = f"{user_text}\n{heard.note}".strip()
        plugin = self.bot.plugin
        early = await plugin.before_turn(ctx) if plugin is not None else None
        if early is not None:
            await self._remember(ctx, self._exchange(ctx, user_text, early.text), result=early)
            if early.text:
                yield ReplyDelta(early.text)
            yield ReplyDone(early)
            return
        if ctx.turn.images and self.media is not None:  # stage see: images in, for a vision persona
            seen = await self.media.vision.see(ctx.turn, ctx.persona)
            user_text = f"{user_text}\n{seen.note}".strip()  # memory keeps a reference, never the bytes
            if seen.flag:
                ctx.flag = seen.flag
            if seen.reply and (seen.reason != "no_vision" or not ctx.turn.text.strip()):
                ctx.meta["reason"] = seen.reason
                if seen.reason == "image_refused":
                    yield ReplyDone(ctx.refusal(seen.category))
                    return
                if seen.reason == "no_vision":
                    await self._remember(ctx, self._exchange(ctx, user_text, seen.reply))
                kinds = {"image_rejected": ReplyKind.REFUSAL, "image_unreadable": ReplyKind.ERROR}
                yield ReplyDelta(seen.reply)
                yield ReplyDone(ctx.result(seen.reply, kinds.get(seen.reason, ReplyKind.ANSWER)))
                return
            if seen.reply:  # no vision, but words to answer: say so beside the answer
                yield ReplyNotice(seen.reply)
            ctx.images = seen.images

        retrieval = await self._retrieve(ctx, user_text)
        fresh = not ctx.state.messages and not ctx.state.summary  # nothing earlier could hold the answer
        # ... and no lookup tool could: a bot that can look things up (an order's status) answers what its
        # help centre does not cover, so the model is asked (found by the support bot's conversation tests).
        can_look_up = self.tools is not None and self.tools.offers_lookup(ctx.turn)
        kb = self.knowledge
        answer = (
            kb.not_covered_answer(retrieval, user_text, fresh=fresh and not can_look_up)
            if kb and retrieval
            else None
        )
        if answer is not None:  # a question nothing here covers: say so and offer a person, no LLM call
            result = ctx.result(answer, ReplyKind.ANSWER, meta={**ctx.meta, "kb": "not_covered"})
            await self._remember(ctx, self._exchange(ctx, user_text, answer))
            yield ReplyDelta(answer)
            yield ReplyDone(result)
            return

        draft = Draft(self._prompt(ctx, user_text, ctx.persona.history_budget, retrieval), retrieval)
        async for delta in self._generate(ctx, user_text, draft, ahead):
            yield delta
        if draft.error is not None:
            async for event in self._llm_failed(ctx, user_text, draft.text, draft.error):
                yield event
            return
        result = await self._check(ctx, draft)
        if result.text != draft.text:
            yield ReplyReplace(result.text)
        if result.kind is ReplyKind.REFUSAL:  # the user's words are kept, the refused reply is not
            await self._remember(ctx, [self._user_message(ctx, user_text)], result=result)
        else:
            fold_before = draft.prompt.window_start_seq or ctx.state.last_seq + 1
            exchange = self._exchange(ctx, user_text, result.text)
            await self._remember(ctx, exchange, fold_before=fold_before, result=result)
        yield ReplyDone(result)

    async def _generate(
        self, ctx: TurnContext, user_text: str, draft: Draft, ahead: EarlyStream[Any] | None = None
    ) -> AsyncIterator[ReplyDelta]:
        """Stage generate: stream the LLM's reply, checking the output every ``MODERATION_STRIDE`` chars.
        A context-length error before anything was shown retries once with half the history budget.
        ``ahead``: the request opened before the verdict, used if it is the one this stage sends."""
        budget = ctx.persona.history_budget
        checked = size = 0
        for attempt in (1, 2):
            request = self._request(ctx, draft.prompt)
            try:
                async with aclosing(self._stream(ctx, request, ahead)) as events:
                    async for event in events:
                        if isinstance(event, LLMEnd):
                            draft.finish_reason, draft.usage = event.finish_reason, event.usage
                            return
                        # At most a stride is shown unchecked, however much text one batch brought (a
                        # fast model's whole reply can arrive between two reads): a delta is cut there.
                        text = event.text
                        while text:
                            room = MODERATION_STRIDE - (size - checked)
                            piece, text = text[:room], text[room:]
                            draft.parts.append(piece)
                            size += len(piece)
                            yield ReplyDelta(piece)
                            if size - checked >= MODERATION_STRIDE:
                                # Only the new text (and a little before it) is checked: linear in the reply.
                                since, checked = checked, size
                                verdict = await self._check_output(
                                    ctx.turn, draft.text, final=False, since=since
                                )
                                if verdict.action is Action.REFUSE:
                                    draft.refused = verdict
                                    return
                return
            except ContextTooLong as exc:
                if attempt == 2 or draft.parts:
                    draft.error = exc
                    return
                budget //= 2
                ahead = None  # taken (and closed) by the first attempt
                ctx.log.warning("context_too_long_retrying", budget=budget)
                draft.prompt = self._prompt(ctx, user_text, budget, draft.retrieval)
            except LLMError as exc:
                draft.error = exc
                return

    async def _stream(
        self, ctx: TurnContext, request: LLMRequest, ahead: EarlyStream[Any] | None = None
    ) -> AsyncGenerator[LLMDelta | LLMEnd, None]:
        """The model's reply: one LLM stream, or the tool loop when the turn offers tools (core/tools).
        A proposed side-effecting call ends the reply with its question; ``ctx.confirm`` carries it for the
        deliveries' confirm / cancel buttons; ``ctx.meta`` any flags tools set (e.g. handoff)."""
        tools = self.tools
        if tools is None or not tools.offers(ctx.turn):
            opened = ahead.take(request) if ahead is not None else None
            if ahead is not None and opened is None:
                await ahead.aclose()  # opened with another request (a rewritten input): send this one
            async with aclosing(opened or self.llm.stream(request)) as plain:
                async for part in plain:
                    if isinstance(part, LLMDelta | LLMEnd):
                        yield part
            return
        async with aclosing(tools.loop.run(request, ctx.turn, meta=ctx.meta, early=ahead)) as looped:
            async for event in looped:
                if isinstance(event, ToolEvent):
                    continue
                if isinstance(event, ToolConfirm):
                    ctx.confirm = confirm_request(event)  # _check makes sure its question is shown as is
                    yield LLMDelta(event.text)
                    continue
                yield event

    async def _check(self, ctx: TurnContext, draft: Draft) -> ReplyResult:
        """Stage check: final output moderation (and the plugin's look at the answer)."""
        text = draft.text
        ctx.usage = draft.usage or Usage(draft.prompt.tokens, self.counter.count(text))
        ctx.finish_reason = draft.finish_reason
        verdict = draft.refused or await self._check_output(ctx.turn, text, final=True)
        ctx.note(verdict)
        asked = ctx.confirm
        if verdict.action is Action.REFUSE:
            ctx.log.info("output_refused", category=verdict.category)
            if asked is not None and self.tools is not None:
                await self.tools.withdraw(ctx.turn, asked, "reply refused")
            return ctx.refusal(verdict.category)
        if verdict.action is Action.REDACT:
            text = verdict.text
        if asked is not None and self.tools is not None and self.tools.question_text(asked) not in text:
            # The final moderation rewrote the question: what would run is not what is shown. No buttons.
            await self.tools.withdraw(ctx.turn, asked, f"question altered: {verdict.category}")
            ctx.confirm = None
            text += WITHDRAWN
        result = ctx.result(text, ReplyKind.ANSWER)
        if draft.retrieval is not None:  # the sources the answer cites as [n], for the adapters to link
            result = replace(result, citations=draft.retrieval.citations(text))
        plugin = self.bot.plugin
        return await plugin.after_turn(ctx, result) if plugin is not None else result

    async def _retrieve(self, ctx: TurnContext, user_text: str) -> Retrieval | None:
        """Stage retrieve: the knowledge base's best chunks for the message, within the persona's budget.
        The query is used and dropped: the knowledge base never stores user text."""
        if self.knowledge is None:
            return None
        retrieval = await self.knowledge.retrieve(
            user_text, channel=ctx.turn.place.channel, persona=ctx.persona.name
        )
        ctx.log.info(
            "kb_retrieved", mode=retrieval.mode, covered=retrieval.covered, chunks=len(retrieval.hits)
        )
        return retrieval

    async def _command(self, ctx: TurnContext, call: CommandCall) -> AsyncIterator[ReplyEvent]:
        """Stage command: run a command's handler (admin check, argument moderation, output check)."""
        ctx.started()  # a command's own work is not the turns' start
        command = self.commands.get(call.name)
        if command is None:
            yield ReplyDone(
                ctx.result(f"Unknown command /{call.name}. Try /help.", ReplyKind.COMMAND, ephemeral=True)
            )
            return
        # An admin command without arguments only shows settings; changing them needs an admin.
        restricted = command.admin_only or (
            command.name in self.bot.config.admin_commands and bool(call.args or call.options)
        )
        if restricted and not ctx.turn.author.is_admin:
            yield ReplyDone(
                ctx.result(f"Only admins can use /{command.name}.", ReplyKind.REFUSAL, ephemeral=True)
            )
            return
        if (wrong := command.bad_option(call.options)) is not None:
            yield ReplyDone(ctx.result(wrong, ReplyKind.REFUSAL, ephemeral=True))
            return
        # Every part of the call that may reach the model is moderated: the arguments and free-text options.
        options = dict(call.options)
        parts = {"": call.args} if call.args else {}
        parts.update(command.free_text_options(call.options))
        for name, text in parts.items():
            verdict = await self.safety.moderator.check_input(ctx.turn, text)
            ctx.note(verdict)
            if verdict.action is Action.REFUSE:
                yield ReplyDone(ctx.refusal(verdict.category))
                return
            if name:
                options[name] = verdict.text
            else:
                call = CommandCall(call.name, verdict.text, call.options)
        call = CommandCall(call.name, call.args, MappingProxyType(options))
        ctx.ephemeral = command.ephemeral
        asked = f"/{call.name} {call.args}".strip()
        shown: list[str] = []
        try:
            async for delta in command.handler(ctx, call):
                shown.append(delta)
                yield ReplyDelta(delta)
        except LLMError as exc:
            async for event in self._llm_failed(ctx, asked, "".join(shown), exc):
                yield event
            return
        text = "".join(shown)
        # A handler that answered as a plain command (ctx.kind COMMAND: a usage line) made no conversation.
        if command.remember and ctx.kind is not ReplyKind.COMMAND:
            verdict = await self._check_output(ctx.turn, text, final=True)
            ctx.note(verdict)
            if verdict.action is Action.REFUSE:
                yield ReplyReplace(ctx.persona.refusal)
                yield ReplyDone(ctx.refusal(verdict.category))
                return
            if (
                command.narrates
                and ctx.spoken
                and self.media is not None
                and _wants_narration(self.bot, call)
            ):
                storyteller = self.bot.personas.get(self.bot.config.story_persona, ctx.persona)
                problem = await self.media.audio.narrate(ctx, ctx.spoken, voice=storyteller.voice)
                if problem:
                    yield ReplyNotice(problem)
            done = ctx.result(text, ctx.kind or ReplyKind.COMMAND, meta={**ctx.meta, "command": call.name})
            await self._remember(ctx, self._exchange(ctx, asked, text), result=done)
        # Built after the write, so a failed write shows in the result's meta.
        yield ReplyDone(
            ctx.result(text, ctx.kind or ReplyKind.COMMAND, meta={**ctx.meta, "command": call.name})
        )

    async def _llm_failed(
        self, ctx: TurnContext, user_text: str, shown: str, exc: LLMError
    ) -> AsyncIterator[ReplyEvent]:
        ctx.log.error("llm_failed", error=type(exc).__name__, detail=str(exc), partial=bool(shown))
        apology = ctx.persona.error
        yield ReplyDelta(("\n\n" + apology) if shown else apology)
        text = (shown + "\n\n" + apology) if shown else apology
        failed = ctx.result(text, ReplyKind.ERROR, meta={"reason": type(exc).__name__})
        # Keep the user's words: the next turn can still refer to them.
        await self._remember(ctx, [self._user_message(ctx, user_text)], result=failed)
        yield ReplyDone(ctx.result(text, ReplyKind.ERROR, meta={"reason": type(exc).__name__}))

    async def _remember(
        self,
        ctx: TurnContext,
        messages: list[NewMessage],
        *,
        fold_before: int = 0,
        result: ReplyResult | None = None,
    ) -> None:
        """Stage remember: the turn's one pipelined write (redacted messages, admission's accounting, and,
        given the turn's ``result``, the console's aggregates), fenced by the conversation lock's lease;
        then, maybe, a summary fold in the background."""
        if ctx.state.degraded:  # Redis was down when the turn started: answer without memory, store nothing
            return
        mem = self.bot.config.memory
        unsummarized = fold_before - ctx.state.summary_upto - 1
        want_fold = mem.summary and fold_before > 0 and unsummarized >= mem.fold_after
        redactor = self.safety.redactor
        redacted = [(m, redactor.redact(m.text)) for m in messages]
        messages = [
            m if r == m.text else replace(m, text=r, tokens=self.counter.count(r)) for m, r in redacted
        ]
        stored = sum(len(m.text.encode()) for m in messages)  # into the stored-bytes budgets
        stats = self.stats if result is not None else None

        def also(pipe: Any) -> None:
            ctx.admission.queue_write(pipe, ctx.usage.total, stored)
            if self.stats is not None:  # the console's search index: the redacted words, and who wrote
                self.stats.index(
                    pipe, ctx.turn.place, [*(m.text for m in messages), ctx.turn.author.display_name]
                )
            if stats is not None and result is not None:
                stats.queue(pipe, ctx.turn, result, time.perf_counter() - ctx.stats.started)

        try:
            recorded = await self.memory.record(
                ctx.turn.place,
                messages,
                user_id=ctx.turn.author.id,
                fold_lock_seconds=FOLD_LOCK_SECONDS if want_fold else 0,
                fence=ctx.fence,
                also=also,
            )
        except StoreError as exc:
            ctx.meta["memory"] = "not_saved"
            ctx.log.error("memory_write_failed", error=str(exc))
            return
        ctx.admission.written(recorded.also_ok)
        # Sent (a failed aggregate command is not re-sent: a lost count beats a doubled one).
        ctx.stats.queued = stats is not None
        if recorded.fold:
            self.tasks.spawn(
                self._fold(ctx, ctx.state.summary, ctx.state.summary_upto, fold_before, recorded.last_seq),
                name=f"fold:{ctx.turn.place.conversation_id}",
            )

    async def _finish(
        self, turn: Turn, result: ReplyResult, seconds: float, tlog: FilteringBoundLogger, mark: StatsMark
    ) -> None:
        """Stage finish: metrics, the decisions the engine made itself (too long, prompt leak), the console's
        aggregates of a turn that wrote nothing (a refusal at admission, a greeting), a log line."""
        if self.metrics is not None:
            self.metrics.observe_turn(turn, result, seconds)
        if self.stats is not None and not mark.queued:
            await self.stats.record(turn, result, seconds)  # never raises; no round trip for ignored turns
        try:
            await self.safety.record_engine_decisions(turn, result)
        except StoreError as exc:
            tlog.warning("safety_record_failed", error=str(exc))
        tlog.info(
            "turn_done",
            kind=result.kind.value,
            persona=result.persona,
            finish=result.finish_reason,
            tokens_in=result.usage.prompt_tokens,
            tokens_out=result.usage.completion_tokens,
            chars=len(result.text),
            ms=round(seconds * 1000, 2),
        )

    # ------------------------------------------------------------------ helpers

    async def _check_output(self, turn: Turn, text: str, *, final: bool, since: int = 0) -> Verdict:
        """Output moderation; ``since``: a streamed check of ``text`` whose first ``since`` characters were
        checked already (the chain looks at the new text plus an overlap)."""
        canary = self.safety.canary
        if canary and canary in text[max(0, since - len(canary)) :]:
            reason = "the reply contains the system prompt's canary"
            return Verdict(Action.REFUSE, text, "prompt_leak", reason, flag="prompt_leak")
        return await self.safety.moderator.check_output(turn, text, final=final, since=since)

    def _prompt(
        self, ctx: TurnContext, user_text: str, budget: int, retrieval: Retrieval | None = None
    ) -> Prompt:
        upto = ctx.state.summary_upto
        system = ctx.system_prompt()
        if self.tools is not None and self.tools.offers(ctx.turn):
            system = with_tools(system)  # the "no tools" line gives way to the tools note
        prompt = build_prompt(
            system=system,
            user_text=user_text,
            user_name=ctx.turn.author.display_name,
            user_id=ctx.turn.author.id,
            history=[m for m in ctx.state.messages if m.seq > upto],
            budget=budget,
            counter=self.counter,
            summary=ctx.state.summary,
            reference=retrieval.prompt_block() if retrieval is not None else self.bot.knowledge,
        )
        if not ctx.images:
            return prompt
        *head, last = prompt.messages  # the new user message carries the images as content parts
        return replace(prompt, messages=(*head, replace(last, images=ctx.images)))

    def _request(self, ctx: TurnContext, prompt: Prompt) -> LLMRequest:
        persona = ctx.persona
        model = persona.model or self.default_model
        return LLMRequest(prompt.messages, model, persona.temperature, persona.max_output_tokens)

    def _user_message(self, ctx: TurnContext, text: str) -> NewMessage:
        a = ctx.turn.author
        return NewMessage("user", text, self.counter.count(text), a.id, a.display_name, ctx.turn.turn_id)

    def _exchange(self, ctx: TurnContext, user_text: str, reply: str) -> list[NewMessage]:
        messages = [self._user_message(ctx, user_text)]
        if reply:
            name = self.bot.config.display_name
            messages.append(
                NewMessage("assistant", reply, self.counter.count(reply), "", name, ctx.turn.turn_id)
            )
        return messages

    async def _keep_as_context(self, ctx: TurnContext) -> None:
        """Store a message the bot does not answer (channel chatter, a handed-off thread) as context for
        later turns, but only what would have been admitted: denied or blocked authors and refused text
        (planted instructions, abuse) never reach other users' prompts."""
        ctx.started()  # moderation (a network wait) and a write, no model: other turns may start
        if not await self.safety.admission.may_store(ctx.turn):
            return
        verdict = await self.safety.moderator.check_input(ctx.turn, ctx.turn.text)
        if verdict.action is Action.REFUSE:
            ctx.log.info("context_refused", category=verdict.category)
            return
        await self._remember(ctx, [self._user_message(ctx, verdict.text)])

    async def _fold(self, ctx: TurnContext, previous: str, upto: int, before: int, last_seq: int) -> None:
        """Fold messages ``upto < seq < before`` into the running summary (one replica at a time)."""
        place = ctx.turn.place
        try:
            old = await self.memory.between(place, upto, before, last_seq)
            if not old:
                await self.memory.save_summary(place, previous, before - 1, upto)
                return
            request = LLMRequest(summary_request(previous, old), self.default_model, 0.2, 400)
            parts: list[str] = []
            async for event in self.llm.stream(request):
                if isinstance(event, LLMDelta):
                    parts.append(event.text)
            summary = "".join(parts).strip()
            if summary:
                saved = await self.memory.save_summary(place, summary, old[-1].seq, upto)
                ctx.log.info("summary_folded", messages=len(old), upto=old[-1].seq, saved=saved)
        except (LLMError, StoreError) as exc:
            ctx.log.warning("summary_fold_failed", error=type(exc).__name__, detail=str(exc))
