"""The tools bundle a runtime owns (:func:`open_tools`) and the command a confirmation click becomes.

A click on "Confirm" / "Cancel" (Slack button, Discord button, y/n in the terminal) arrives as a new turn
running ``/tool confirm <id>`` or ``/tool cancel <id>`` by the clicking user: the command resumes the
pending call through :meth:`ToolLoop.resume` and streams the model's answer like a chat reply.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from pydantic import SecretStr

from core.bot import BotSpec
from core.clicks import CANCEL, CONFIRM
from core.commands import Command
from core.errors import ConfigError
from core.keys import KeySpace
from core.llm import LLM, LLMDelta, LLMEnd
from core.moderation import Action, Moderator
from core.ops.metrics import Metrics
from core.prompt import with_tools
from core.safety.events import EventLog
from core.tools.audit import ToolAudit
from core.tools.config import ToolsConfig
from core.tools.loop import TAKE_FAILED, ArgumentCheck, ToolConfirm, ToolLoop, confirm_text
from core.tools.pending import PendingSigner, PendingStore
from core.tools.registry import ToolRegistry
from core.tools.spec import Tool
from core.types import CommandCall, ConfirmRequest, ReplyKind, Turn

if TYPE_CHECKING:
    from core.context import TurnContext

WITHDRAWN = (
    "\n\n(I won't ask you to confirm that action: it could not be shown here exactly as it would run.)"
)


def confirm_request(event: ToolConfirm) -> ConfirmRequest:
    """The reply's typed question for a proposed call: its id, tool, exact arguments and the question in
    words (the tool's confirmation template, core/tools/wording.py)."""
    pending = event.pending
    arguments = json.dumps(pending.arguments, ensure_ascii=False, sort_keys=True)
    return ConfirmRequest(pending.id, pending.tool, arguments, event.summary or f"run {pending.tool}?")


@dataclass
class Tools:
    registry: ToolRegistry
    loop: ToolLoop

    @property
    def config(self) -> ToolsConfig:
        return self.registry.config

    def offers(self, turn: Turn) -> bool:
        return bool(self.registry.config.enabled and self.registry.available(turn))

    def offers_lookup(self, turn: Turn) -> bool:
        """Does the turn offer a tool that only reads (the model may find an answer the knowledge base
        lacks)?"""
        return self.offers(turn) and any(not s.side_effects for s in self.registry.available(turn))

    def commands(self) -> list[Command]:
        return [tool_command(self)]

    def question_text(self, confirm: ConfirmRequest) -> str:
        """The question as the loop wrote it for ``confirm`` (without its leading paragraph break)."""
        tool = self.registry.get(confirm.tool)
        template = tool.spec.confirm if tool is not None else ""
        return confirm_text(confirm.tool, json.loads(confirm.arguments), template)

    async def withdraw(self, turn: Turn, confirm: ConfirmRequest, why: str) -> None:
        """The reply around a proposed call could not be shown as generated: forget the call (nothing a
        click could run; the caller drops the question) and audit why."""
        await self.loop.pending.discard(confirm.id)
        await self.loop.audit.record(
            turn, tool=confirm.tool, source="confirm", arguments="", outcome="withdrawn", detail=why
        )

    async def click_refusal(self, pending_id: str, turn: Turn) -> str:
        """What a click (``turn``, by the person who clicked) on a proposed call's buttons is told
        privately, or "" when it may go ahead: only the person the call was proposed to answers it, once.
        A refusal is audited like one the resume would make; adapters take the buttons away on ""."""
        owner, tool, why = await self.loop.pending.state(pending_id)
        if not why and owner == turn.author.id:
            return ""
        why = why or "not_yours"
        await self.loop.audit.record(
            turn,
            tool=tool or "unknown",
            source="confirm",
            arguments="",
            outcome=f"confirm_{why}",
            detail=pending_id,
        )
        return self.loop.options.take_failed.get(why, TAKE_FAILED["expired"])

    async def check(self) -> tuple[list[str], list[str]]:
        """(lines, problems) for ``parley check``: each tool, and whether each MCP server answers now."""
        lines: list[str] = []
        problems: list[str] = []
        found = self.registry.all()
        for name in sorted(found):
            spec = found[name].spec
            kind = "asks first" if spec.side_effects else "read-only"
            extra = ", admins only" if spec.admin_only else ""
            allowed = "" if not self.config.allow or name in self.config.allow else ", not in tools.allow"
            lines.append(f"tool {name}: {kind}, {spec.source}{extra}{allowed}")
        for name in self.config.allow:
            if name not in found:
                problems.append(
                    f"tools.allow: no tool named {name!r} (have {', '.join(sorted(found)) or 'none'})"
                )
        for server, problem in await self.registry.status():
            count = sum(1 for t in found.values() if t.spec.source == f"mcp:{server}")
            if problem:
                problems.append(f"mcp server {server}: {problem}")
            else:
                lines.append(f"mcp server {server}: ok ({count} tools)")
        return lines, problems


def plugin_tools(spec: BotSpec) -> list[Tool]:
    """The Python tools a bot's plugin declares (``plugin.tools()``, optional)."""
    declare = getattr(spec.plugin, "tools", None)
    return list(declare()) if declare is not None else []


async def check_allowed(config: ToolsConfig, tools: Tools | None, source: str) -> list[str]:
    """Names in ``[tools] allow`` that nothing provides. Raises when that is certain (no MCP server could
    still provide them: none is configured, or all answer and list none of those names); returns them when
    a server is down and might (the caller warns). A plugin that failed to load must never leave its tools
    silently missing."""
    if not config.enabled or not config.allow:
        return []
    found = tools.registry.all() if tools is not None else {}
    missing = [name for name in config.allow if name not in found]
    if not missing:
        return []
    # MCP servers configured but not running here (PARLEY_MCP=false) or not answering: they may provide them
    running = tools.registry.servers if tools is not None else []
    unknowable = bool(config.mcp) and (
        not running or any(problem for _, problem in await tools.registry.status())  # type: ignore[union-attr]
    )
    if not unknowable:
        raise ConfigError(
            f"{source}: tools.allow names {', '.join(repr(n) for n in missing)}, which no tool provides "
            f"(plugin.py tools() or an MCP server; have {', '.join(sorted(found)) or 'none'})"
        )
    return missing


def tool_command(tools: Tools) -> Command:
    async def handler(ctx: TurnContext, call: CommandCall) -> AsyncIterator[str]:
        words = call.args.split()
        if len(words) != 2 or words[0] not in (CONFIRM, CANCEL):
            ctx.kind = ReplyKind.COMMAND  # not conversation: neither the junk nor the usage line is kept
            yield "Usage: /tool confirm <id> or /tool cancel <id> (the buttons under my question do this)."
            return
        ctx.kind = ReplyKind.ANSWER
        system = with_tools(ctx.system_prompt())
        events = tools.loop.resume(
            words[1], ctx.turn, confirmed=words[0] == CONFIRM, system=system, meta=ctx.meta
        )
        async for event in events:
            if isinstance(event, LLMDelta):
                yield event.text
            elif isinstance(event, ToolConfirm):
                ctx.confirm = confirm_request(event)
                yield event.text
            elif isinstance(event, LLMEnd):
                ctx.finish_reason = event.finish_reason
                if event.usage is not None:
                    ctx.usage = ctx.usage + event.usage

    return Command(
        "tool",
        "Confirm or cancel an action I proposed",
        handler,
        usage="confirm|cancel <id>",
        args_description="confirm <id> or cancel <id>",
        remember=True,
    )


@asynccontextmanager
async def open_tools(
    config: ToolsConfig,
    llm: LLM,
    client: aioredis.Redis,
    keys: KeySpace,
    *,
    tools: Iterable[Tool] = (),
    events: EventLog | None = None,
    metrics: Metrics | None = None,
    redact: Callable[[str], str] = lambda text: text,
    redact_before_llm: bool = False,
    signing_keys: SecretStr | None = None,
    moderator: Moderator | None = None,
) -> AsyncIterator[Tools]:
    """Start the bot's MCP servers and build the loop; stops the servers on exit.

    ``redact`` is the profile's redactor: always applied to what is stored (pending calls, audit), and to
    what the model sees when ``redact_before_llm`` (the strict profile). ``signing_keys``
    (``PARLEY_CREDENTIALS_KEYS``) MAC the pending calls, so a Redis writer cannot change what a click runs.
    ``moderator``'s output check runs over a proposed call's arguments: one it would change is refused (the
    user must see exactly what would run)."""
    registry = ToolRegistry(config, tools)
    async with registry:
        loop = ToolLoop(
            llm,
            registry,
            pending=PendingStore(
                client,
                keys,
                ttl_seconds=config.confirm_ttl_seconds,
                signer=PendingSigner.from_keys(signing_keys),
            ),
            audit=ToolAudit(events=events, metrics=metrics, redact=redact),
            redact_model=redact if redact_before_llm else (lambda text: text),
            redact_store=redact,
            redis=client,
            check_arguments=argument_check(moderator) if moderator is not None else None,
        )
        yield Tools(registry, loop)


def argument_check(moderator: Moderator) -> ArgumentCheck:
    """Output moderation as a judge of a proposed call's shown arguments: any change is a refusal."""

    async def check(turn: Turn, shown: str) -> str:
        verdict = await moderator.check_output(turn, shown, final=True)
        if verdict.action is Action.REFUSE:
            return verdict.category or "refused"
        if verdict.action is Action.REDACT and verdict.text != shown:
            return verdict.category or "redacted"
        return ""

    return check
