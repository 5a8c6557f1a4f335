"""The tool-calling loop that replaces a turn's single ``llm.stream`` call.

    round 0..N-1: stream the model with the turn's tools -> text deltas, maybe tool calls
                  read-only calls run now (concurrently, each with a timeout); results are redacted,
                  capped and fenced as untrusted, then go back to the model
                  a side-effecting call is never run here: it is stored as a pending call bound to the
                  user, and the turn ends showing its exact arguments (ToolConfirm)
    round N:      the model answers without tools (the loop is bounded)

The user's click comes back as a new turn (``/tool confirm <id>`` or ``/tool cancel <id>``), which calls
:meth:`ToolLoop.resume`: it runs (or declines) the call and lets the model finish. Whatever a tool result
says, the model can at most *propose* a side-effecting call: only the proposed user's click runs one.
Denied, invalid, failed, timed-out, cancelled and unconfirmed calls are reported to the model as such.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

import redis.asyncio as aioredis
import structlog

from core.early import EarlyStream
from core.errors import ToolError, ToolTimeout, ToolUnavailable
from core.llm import LLM, ChatMessage, LLMDelta, LLMEnd, LLMEvent, LLMRequest, LLMToolCalls, ToolCall
from core.tools import fence
from core.tools.audit import ToolAudit
from core.tools.function import FunctionTool
from core.tools.pending import PendingCall, PendingStore, dump_messages, new_id
from core.tools.registry import ToolRegistry
from core.tools.spec import ConversationControl, Tool, ToolContext
from core.tools.wording import confirm_summary
from core.types import Turn, Usage

log = structlog.get_logger("parley.tools")

ROUNDS_EXHAUSTED = "I could not finish looking that up just now. Could you rephrase, or ask me again?"
ONE_AT_A_TIME = (
    "not run: another action is already waiting for the user's confirmation; propose this one again after "
    "the user has answered"
)
TAKE_FAILED = {
    "expired": "That request has expired or was already answered. Ask me again if you still want it.",
    "not_yours": "Only the person who asked can confirm or cancel that action.",
    "already_handled": "That request was already answered.",
    "forged": "That request was changed after I asked, so I won't run it. Ask me again if you still want it.",
}


@dataclass(frozen=True, slots=True)
class ToolEvent:
    """A call was decided (ran, failed, denied ...): adapters may show a status line."""

    tool: str
    outcome: str
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ToolConfirm:
    """The turn ends here: show ``text`` with confirm / cancel for ``pending`` (bound to its user)."""

    pending: PendingCall
    text: str
    summary: str = ""  # the question in words (the tool's confirmation template), one line


LoopEvent = LLMDelta | ToolEvent | ToolConfirm | LLMEnd

TOOL_NAME_META = "tool_name"  # ReplyResult.meta: the tool a click was about (also when the click failed)


def shown_arguments(arguments: Mapping[str, Any]) -> str:
    """The arguments as the user sees them: every character of every value, nothing rewritten."""
    return json.dumps(arguments, indent=2, ensure_ascii=False, sort_keys=True)


def confirm_text(tool: str, arguments: Mapping[str, Any], template: str = "") -> str:
    """The summary in words (the tool's confirmation template, if any) and the exact arguments."""
    args = shown_arguments(arguments)
    # A fence longer than any run of backticks inside: the arguments cannot close it and restyle the rest.
    longest = max((len(run) for run in re.findall(r"`+", args)), default=0)
    fence_ = "`" * max(3, longest + 1)
    summary = confirm_summary(tool, arguments, template)
    return f"{summary}\nDetails, the exact arguments:\n{fence_}\n{args}\n{fence_}\nShall I go ahead?"


ArgumentCheck = Callable[[Turn, str], Awaitable[str]]
"""Output moderation over a proposed call's shown arguments: '' when it would show them unchanged, else
why not. A call the user could not see exactly as it would run is never offered for confirmation."""

ALTERED = (
    "not run: output moderation would change these arguments before the user saw them ({why}), so the user "
    "could not confirm what would really run. Propose the action without that content, or explain instead."
)


@dataclass
class _Decided:
    call: ToolCall
    message: ChatMessage | None  # None for the call left pending
    outcome: str = "pending"


@dataclass
class LoopOptions:
    max_rounds: int = 4
    timeout_seconds: float = 10.0
    max_result_chars: int = 4_000
    exhausted_text: str = ROUNDS_EXHAUSTED
    take_failed: dict[str, str] = field(default_factory=lambda: dict(TAKE_FAILED))


class ToolLoop:
    def __init__(
        self,
        llm: LLM,
        registry: ToolRegistry,
        *,
        pending: PendingStore,
        audit: ToolAudit,
        redact_model: fence.Redact = lambda text: text,
        redact_store: fence.Redact = lambda text: text,
        control: ConversationControl | None = None,
        redis: aioredis.Redis | None = None,
        options: LoopOptions | None = None,
        check_arguments: ArgumentCheck | None = None,
    ) -> None:
        self.llm = llm
        self.registry = registry
        self.pending = pending
        self.audit = audit
        self._redact_model = redact_model
        self._redact_store = redact_store
        self.control = control
        self.redis = redis
        self.check_arguments = check_arguments
        cfg = registry.config
        self.options = options or LoopOptions(cfg.max_rounds, cfg.timeout_seconds, cfg.max_result_chars)

    def tools_for(self, turn: Turn) -> list[dict[str, Any]]:
        return self.registry.openai_tools(turn)

    async def run(
        self,
        request: LLMRequest,
        turn: Turn,
        *,
        meta: dict[str, str] | None = None,
        early: EarlyStream[LLMEvent] | None = None,
    ) -> AsyncGenerator[LoopEvent, None]:
        """Answer ``request`` (its messages: system prompt, history, the user's message), using tools.
        ``early``: the first round's stream, opened before the input verdict (:meth:`open_early`); used
        when it was opened with the request this round sends, closed otherwise."""
        offered = self.tools_for(turn)
        rounds = self._rounds(request, list(request.messages), turn, offered, 0, meta or {}, early)
        async for event in rounds:
            yield event

    def open_early(self, request: LLMRequest, turn: Turn) -> EarlyStream[LLMEvent]:
        """Send the first round's request of :meth:`run` now; nothing of it is read until ``run`` takes it."""
        tools = self.tools_for(turn) if self.options.max_rounds > 0 else []
        first = self._round_request(request, list(request.messages), tools)
        return EarlyStream(first, self.llm.stream(first))

    @staticmethod
    def _round_request(
        base: LLMRequest, messages: list[ChatMessage], tools: list[dict[str, Any]]
    ) -> LLMRequest:
        return replace(base, messages=tuple(messages), tools=tools)

    async def resume(
        self, pending_id: str, turn: Turn, *, confirmed: bool, system: str, meta: dict[str, str] | None = None
    ) -> AsyncGenerator[LoopEvent, None]:
        """The user clicked: run (or decline) the pending call, then let the model finish."""
        meta = meta if meta is not None else {}
        pending, why = await self.pending.take(pending_id, turn)
        if pending is None:
            name = await self.pending.tool_of(pending_id) or "unknown"
            meta[TOOL_NAME_META] = name
            await self.audit.record(
                turn, tool=name, source="confirm", arguments="", outcome=f"confirm_{why}", detail=pending_id
            )
            yield LLMDelta(self.options.take_failed.get(why, TAKE_FAILED["expired"]))
            yield LLMEnd("tool_confirm_" + why, None)
            return
        meta.update(pending.meta)
        tool = self.registry.get(pending.tool)
        call = ToolCall(pending.call_id, pending.tool, json.dumps(pending.arguments))
        if not confirmed:
            text = fence.status(pending.tool, "cancelled", "the user declined; do not retry unless they ask")
            await self._audit(turn, pending.tool, tool, pending.arguments, "cancelled", 0.0)
            yield ToolEvent(pending.tool, "cancelled")
        elif tool is None or (denial := self.registry.denial(tool.spec, turn)):
            reason = "no such tool" if tool is None else denial
            text = fence.status(pending.tool, "denied", reason)
            await self._audit(turn, pending.tool, tool, pending.arguments, "denied", 0.0, reason)
            yield ToolEvent(pending.tool, "denied")
        else:
            outcome, text, seconds = await self._invoke(tool, pending.arguments, turn, meta, confirmed=True)
            yield ToolEvent(pending.tool, outcome, seconds)
        messages = [ChatMessage("system", system), *pending.chat_messages()]
        messages.append(ChatMessage("tool", text, tool_call_id=call.id))
        request = LLMRequest(messages, pending.model, pending.temperature, pending.max_tokens)
        offered = self.tools_for(turn)
        async for event in self._rounds(request, messages, turn, offered, pending.next_round, meta):
            yield event

    # -- the rounds

    async def _rounds(
        self,
        base: LLMRequest,
        messages: list[ChatMessage],
        turn: Turn,
        offered: list[dict[str, Any]],
        start: int,
        meta: dict[str, str],
        early: EarlyStream[LLMEvent] | None = None,
    ) -> AsyncGenerator[LoopEvent, None]:
        total = Usage()
        known = True
        finish = ""
        names = {t["function"]["name"] for t in offered}
        shown = False  # text went to the user in an earlier round: the next round's starts a new paragraph
        for rnd in range(start, self.options.max_rounds + 1):
            tools = offered if rnd < self.options.max_rounds else []
            request = self._round_request(base, messages, tools)
            calls: tuple[ToolCall, ...] = ()
            said: list[str] = []
            stream = early.take(request) if early is not None else None
            if early is not None and stream is None:
                await early.aclose()  # opened with another request: cancel it, send this one
            early = None
            async with aclosing(stream or self.llm.stream(request)) as events:
                async for event in events:
                    if isinstance(event, LLMDelta):
                        if shown and not said:
                            yield LLMDelta("\n\n")
                        said.append(event.text)
                        yield event
                    elif isinstance(event, LLMToolCalls):
                        calls = event.calls
                    else:
                        finish = event.finish_reason
                        if event.usage is None:
                            known = False
                        else:
                            total = total + event.usage
            if not calls:
                yield LLMEnd(finish, total if known else None)
                return
            if not tools:  # the last round offered no tools and the model asked anyway
                log.info("tool_rounds_exhausted", rounds=rnd, turn_id=turn.turn_id)
                if not said:
                    yield LLMDelta(("\n\n" if shown else "") + self.options.exhausted_text)
                yield LLMEnd("tool_rounds_exhausted", total if known else None)
                return
            messages.append(ChatMessage("assistant", "".join(said), tool_calls=calls))
            shown = shown or bool(said)
            decided, confirm = await self._decide(calls, turn, names, meta)
            for item in decided:
                if item.message is not None:
                    messages.append(item.message)
            for item in decided:
                if item.message is not None:
                    yield ToolEvent(item.call.name, item.outcome)
            if confirm is not None:
                call, arguments = confirm
                pending = PendingCall(
                    id=new_id(),
                    user=turn.author.id,
                    platform=turn.place.platform,
                    workspace=turn.place.workspace,
                    channel=turn.place.channel,
                    tool=call.name,
                    arguments=arguments,
                    call_id=call.id,
                    messages=self._stored(messages),
                    model=base.model,
                    temperature=base.temperature,
                    max_tokens=base.max_tokens,
                    next_round=rnd + 1,
                    meta=dict(meta),
                )
                pending = await self.pending.save(pending)
                tool = self.registry.get(call.name)
                template = tool.spec.confirm if tool is not None else ""
                text = confirm_text(call.name, arguments, template)
                if said or shown:
                    text = "\n\n" + text
                yield ToolConfirm(pending, text, confirm_summary(call.name, arguments, template))
                yield LLMEnd("tool_confirm", total if known else None)
                return
        raise AssertionError("unreachable: the last round offers no tools")  # pragma: no cover

    def _stored(self, messages: list[ChatMessage]) -> list[dict[str, Any]]:
        """What a pending call keeps in Redis: no system prompt, tool results redacted for storage."""
        kept = [
            replace(m, content=self._redact_store(m.content)) if m.role == "tool" else m
            for m in messages
            if m.role != "system"
        ]
        return dump_messages(kept)

    async def _decide(
        self, calls: tuple[ToolCall, ...], turn: Turn, offered: set[str], meta: dict[str, str]
    ) -> tuple[list[_Decided], tuple[ToolCall, dict[str, Any]] | None]:
        decided: list[_Decided] = []
        confirm: tuple[ToolCall, dict[str, Any]] | None = None
        runs: list[tuple[int, Tool, dict[str, Any]]] = []
        for call in calls:
            tool = self.registry.get(call.name)
            arguments: Any = None
            reason = ""
            outcome = "denied"
            if tool is None or call.name not in offered:
                reason = "no such tool here" if tool is None else self.registry.denial(tool.spec, turn)
                reason = reason or "that tool was not offered in this turn"
            else:
                denial = self.registry.denial(tool.spec, turn)
                try:
                    arguments = json.loads(call.arguments or "{}")
                except json.JSONDecodeError:
                    arguments = None
                if denial:
                    reason = denial
                elif not isinstance(arguments, dict):
                    outcome, reason = "invalid", "the arguments were not a JSON object"
                elif isinstance(tool, FunctionTool):
                    try:
                        tool.validate(arguments)
                    except ToolError as exc:
                        outcome, reason = "invalid", str(exc)
            if reason:
                await self._audit(turn, call.name, tool, call.arguments, outcome, 0.0, reason)
                decided.append(
                    _Decided(
                        call,
                        ChatMessage("tool", fence.status(call.name, outcome, reason), tool_call_id=call.id),
                        outcome,
                    )
                )
                continue
            assert tool is not None
            assert isinstance(arguments, dict)
            if tool.spec.side_effects:
                why = (
                    await self.check_arguments(turn, shown_arguments(arguments))
                    if self.check_arguments
                    else ""
                )
                if why:
                    await self._audit(
                        turn, call.name, tool, arguments, "refused", 0.0, f"arguments altered: {why}"
                    )
                    status = fence.status(call.name, "refused", ALTERED.format(why=why))
                    decided.append(
                        _Decided(call, ChatMessage("tool", status, tool_call_id=call.id), "refused")
                    )
                elif confirm is None:
                    confirm = (call, arguments)
                    await self._audit(turn, call.name, tool, arguments, "pending", 0.0)
                    decided.append(_Decided(call, None))
                else:
                    await self._audit(turn, call.name, tool, arguments, "not_run", 0.0, "one at a time")
                    status = fence.status(call.name, "not_run", ONE_AT_A_TIME)
                    decided.append(
                        _Decided(call, ChatMessage("tool", status, tool_call_id=call.id), "not_run")
                    )
                continue
            runs.append((len(decided), tool, arguments))
            decided.append(_Decided(call, None))
        results = await asyncio.gather(*(self._invoke(t, a, turn, meta) for _, t, a in runs))
        for (index, _, _), (outcome, text, _) in zip(runs, results, strict=True):
            decided[index].message = ChatMessage("tool", text, tool_call_id=decided[index].call.id)
            decided[index].outcome = outcome
        return decided, confirm

    async def _invoke(
        self,
        tool: Tool,
        arguments: dict[str, Any],
        turn: Turn,
        meta: dict[str, str],
        *,
        confirmed: bool = False,
    ) -> tuple[str, str, float]:
        """Run one call with the per-tool timeout -> (outcome, what the model is told, seconds)."""
        name = tool.spec.name
        ctx = ToolContext(turn, self.redis, self.control, meta)
        timeout = self.options.timeout_seconds
        started = time.perf_counter()
        detail = ""
        try:
            async with asyncio.timeout(timeout):
                raw = await tool.call(arguments, ctx)
        except (TimeoutError, ToolTimeout):
            outcome = "timeout"
            text = fence.status(
                name, "timeout", f"the tool did not answer within {timeout:g}s; it may be slow or down"
            )
        except ToolUnavailable as exc:
            outcome, text, detail = "unavailable", fence.status(name, "unavailable", str(exc)), str(exc)
        except ToolError as exc:
            outcome, text, detail = "error", fence.status(name, "error", str(exc)), str(exc)[:200]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a tool's own bug: the model hears it failed, the log has the rest
            log.exception("tool_crashed", tool=name, error=type(exc).__name__)
            outcome, text, detail = (
                "error",
                fence.status(name, "error", "the tool failed"),
                type(exc).__name__,
            )
        else:
            outcome = "ok"
            limit = self.options.max_result_chars
            text = fence.fence(name, raw, redact=self._redact_model, limit=limit)
        seconds = time.perf_counter() - started
        if confirmed:
            detail = ("confirmed by user" + (f"; {detail}" if detail else "")).strip()
        await self._audit(turn, name, tool, arguments, outcome, seconds, detail)
        return outcome, text, seconds

    async def _audit(
        self,
        turn: Turn,
        name: str,
        tool: Tool | None,
        arguments: Mapping[str, Any] | str,
        outcome: str,
        seconds: float,
        detail: str = "",
    ) -> None:
        source = tool.spec.source if tool is not None else "unknown"
        await self.audit.record(
            turn,
            tool=name,
            source=source,
            arguments=arguments,
            outcome=outcome,
            seconds=seconds,
            detail=detail,
        )
