"""The support bot's own Python: human handoff and ``/resume``.

Handoff starts in two ways, both deterministic (no model output decides on its own):

- the customer asks for a person ("can I talk to a human?"): answered at once, without the LLM;
- the model says it cannot help, using the exact sentence the persona prescribes (:data:`HANDOFF_LINE`);
- the model calls the ``handoff`` tool, and the customer confirms it (a side effect: it pauses the bot).

Either way the conversation is paused in Redis (``engine.pause``): the bot stays quiet there, still
remembering what is said, until a support agent resumes it (``/resume``, or the "Resume bot" button the
Slack adapter puts on the notice it posts in the support channel). The result carries
``ReplyResult.handoff``; every delivery uses that to alert people.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import Annotated

from pydantic import Field

from core.bot import BotConfig
from core.commands import Command
from core.context import TurnContext
from core.tools.function import FunctionTool, function_tool
from core.tools.spec import Tool, ToolContext
from core.types import CommandCall, ReplyKind, ReplyResult

# The sentence the persona is told to end with when it cannot help (personas/agent.toml says the same).
HANDOFF_LINE = "I'll ask a colleague to follow up here."

HANDOFF_REPLY = (
    "Of course. I've asked a colleague from our support team to take over this conversation; they will "
    "follow up right here as soon as they can (Monday to Friday, 08:00–18:00 CET). "
    "You can keep adding details in the meantime."
)

_PEOPLE = (
    r"(?:a\s+|an\s+|the\s+|some\s+|your\s+)?(?:human|person|real\s+person|people|someone|somebody|agent"
    r"|live\s+agent|representative|rep|staff|operator|supervisor|manager|colleague)"
)
_ASK_FOR_PERSON = re.compile(
    "|".join(
        [
            rf"\b(?:talk|speak|chat)\s+(?:to|with)\s+{_PEOPLE}\b",
            rf"\b(?:connect|transfer|put)\s+me\s+(?:to|with|through\s+to)\s+{_PEOPLE}\b",
            r"\bescalate\b",
            rf"^\W*(?:{_PEOPLE}|hand\s*off)(?:\s+please)?\W*$",
            r"\b(?:is\s+there|can\s+i\s+(?:get|have)|i\s+want|i\s+need|i'd\s+like)\s+(?:a\s+|to\s+talk\s+to\s+a\s+)?"
            r"(?:human|real\s+person|live\s+agent|representative)\b",
        ]
    ),
    re.IGNORECASE,
)


def asks_for_person(text: str) -> bool:
    """Does the customer ask to be handed to a person?"""
    return bool(_ASK_FOR_PERSON.search(text))


def says_cannot_help(reply: str) -> bool:
    """Did the model end with the handoff sentence (tolerating quotes, case and curly apostrophes)?"""
    norm = reply.replace("’", "'").lower()
    return HANDOFF_LINE.lower().rstrip(".") in norm[-300:]


async def _resume(ctx: TurnContext, call: CommandCall) -> AsyncIterator[str]:
    if not ctx.state.paused:
        yield "The bot is not paused in that conversation."
        return
    await ctx.resume()
    ctx.log.info("handoff_resumed", by=ctx.turn.author.id)
    yield "Done: the bot answers in that conversation again."


RESUME = Command(
    "resume",
    "Let the bot answer again in a conversation handed to a person",
    _resume,
    usage="[thread link]",
    args_description="link to the thread to resume (Slack: copy the thread's link)",
    admin_only=True,
    ephemeral=True,
)


@function_tool(name="handoff", side_effects=True)
async def handoff_tool(
    reason: Annotated[str, Field(description="why a person should take over, in one line", max_length=300)],
    ctx: ToolContext,
) -> str:
    """Hand this conversation to a human colleague (the bot stays quiet here until an agent resumes it)."""
    if ctx.control is None:
        return "Handoff is not available here."
    await ctx.control.pause(ctx.turn, "handoff")
    ctx.meta["handoff"] = "requested"
    return f"Handed off ({reason}). Tell the customer a colleague will follow up here, Monday to Friday."


HANDOFF_TOOL: FunctionTool = handoff_tool


class SupportPlugin:
    def __init__(self, config: BotConfig) -> None:
        self.config = config

    def commands(self) -> Iterable[Command]:
        return [RESUME]

    def tools(self) -> Iterable[Tool]:
        return [HANDOFF_TOOL]

    async def before_turn(self, ctx: TurnContext) -> ReplyResult | None:
        if not asks_for_person(ctx.turn.text):
            return None
        await ctx.pause("handoff")
        ctx.log.info("handoff_requested", trigger="customer")
        return ctx.result(HANDOFF_REPLY, ReplyKind.ANSWER, handoff=True)

    async def after_turn(self, ctx: TurnContext, result: ReplyResult) -> ReplyResult:
        if result.kind is not ReplyKind.ANSWER or not says_cannot_help(result.text):
            return result
        await ctx.pause("handoff")
        ctx.log.info("handoff_requested", trigger="model")
        return replace(result, handoff=True)


def make_plugin(config: BotConfig) -> SupportPlugin:
    return SupportPlugin(config)
