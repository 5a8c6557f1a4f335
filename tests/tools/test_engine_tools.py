"""Tools inside the turn pipeline (real runtime, real Redis, fake LLM): the generate stage, memory, audit
through ``/safety events``, the handoff tool, and <think> kept from users and memory."""

from __future__ import annotations

import dataclasses
from typing import Any

from bots.loader import load_bot
from core.clicks import confirm_call
from core.prompt import NO_TOOLS, TOOLS_NOTE
from core.runtime import Runtime
from core.tools.function import function_tool
from core.types import ReplyKind, Turn
from tests.conftest import RuntimeFactory, without_limits
from tests.core.helpers import make_turn
from tests.fakes.openai_server import Call, FakeOpenAI, Reply, ToolCalls


async def stored(rt: Runtime, turn: Turn) -> list[str]:
    state = await rt.engine.memory.load(turn.place, tail=50)
    return [m.text for m in state.messages]


async def test_think_never_reaches_users_or_memory(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(
        ToolCalls([Call("roll_dice", {"count": 1, "sides": 20})], text="<think>I should roll</think>"),
        Reply("<think>the roll was low, hide that\n</think>You rolled a natural 20!", chunk_chars=4),
    )
    async with runtime_factory("arcade", spec=without_limits(load_bot("arcade"))) as rt:
        turn = make_turn("roll a d20", platform="discord")
        result = await rt.engine.collect(turn)
        assert result.kind is ReplyKind.ANSWER
        assert result.text == "You rolled a natural 20!"
        memory = await stored(rt, turn)
        assert memory[-1] == "You rolled a natural 20!"
        assert not any("think" in m or "hide that" in m for m in memory)
    first = fake_openai.chat_requests[0].body
    assert NO_TOOLS not in first["messages"][0]["content"]  # the turn has tools: the line gives way
    assert TOOLS_NOTE in first["messages"][0]["content"]
    assert {t["function"]["name"] for t in first["tools"]} == {
        "roll_dice",
        "trivia_scoreboard",
        "trivia_award",
    }


async def test_tool_calls_show_in_safety_events(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(ToolCalls([Call("roll_dice", {"count": 2, "sides": 6})]), Reply("Seven!"))
    async with runtime_factory("arcade", spec=without_limits(load_bot("arcade"))) as rt:
        await rt.engine.collect(make_turn("roll 2d6", platform="discord", user="u-roller"))
        shown = await rt.engine.collect(make_turn("/safety events", platform="discord", admin=True))
    line = next(line for line in shown.text.splitlines() if "roll_dice" in line)
    assert "tool roll_dice → ok" in line
    assert "user u-roller" in line
    assert 'args={"count": 2, "sides": 6}' in line
    assert "ms=" in line
    assert "python" in line


async def test_handoff_tool_asks_then_pauses_the_conversation(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(ToolCalls([Call("handoff", {"reason": "refund above the limit"})]))
    async with runtime_factory("support", spec=without_limits(load_bot("support"))) as rt:
        assert rt.tools is not None
        assert [s.name for s in rt.tools.registry.available(make_turn("x"))] == ["handoff"]  # MCP is off here
        turn = make_turn("I want a 400 EUR refund", platform="slack", user="cust")
        asked = await rt.engine.collect(turn)
        assert "refund above the limit" in asked.text
        pending = asked.confirm.id
        state = await rt.engine.memory.load(turn.place, tail=10)
        assert not state.paused  # nothing happened yet

        fake_openai.queue(Reply("A colleague will follow up here."))
        click = dataclasses.replace(
            turn, text="/tool confirm", command=confirm_call(pending, True), turn_id="t2"
        )
        done = await rt.engine.collect(click)
        assert done.text == "A colleague will follow up here."
        assert done.handoff  # the adapters alert the support channel
        state = await rt.engine.memory.load(turn.place, tail=10)
        assert state.paused


@function_tool
async def customer_profile(customer: str) -> str:
    """The customer's contact details."""
    return f"{customer}: email ana.lopez@example.com, phone +34 612 345 678"


@dataclasses.dataclass
class WithProfileTool:
    """The support plugin plus one tool that returns personal data."""

    inner: Any

    def commands(self) -> Any:
        return self.inner.commands()

    def tools(self) -> list[Any]:
        return [*self.inner.tools(), customer_profile]

    async def before_turn(self, ctx: Any) -> Any:
        return await self.inner.before_turn(ctx)

    async def after_turn(self, ctx: Any, result: Any) -> Any:
        return await self.inner.after_turn(ctx, result)


async def test_strict_profile_redacts_tool_results_before_the_model(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    spec = without_limits(load_bot("support"))  # strict: personal data is redacted before the LLM
    tools = spec.config.tools.model_copy(update={"allow": [*spec.config.tools.allow, "customer_profile"]})
    spec = dataclasses.replace(
        spec,
        plugin=WithProfileTool(spec.plugin),
        config=spec.config.model_copy(update={"tools": tools}),
    )
    fake_openai.queue(
        ToolCalls([Call("customer_profile", {"customer": "Ana"})]), Reply("I found your details.")
    )
    async with runtime_factory("support", spec=spec) as rt:
        assert rt.safety.redact_before_llm
        await rt.engine.collect(make_turn("what do you have on me?", platform="slack"))
    told = fake_openai.chat_requests[1].body["messages"][-1]["content"]
    assert '<tool_result tool="customer_profile">' in told
    assert "ana.lopez@example.com" not in told
    assert "612 345 678" not in told


async def test_a_bot_with_tools_off_says_it_has_none(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    spec = without_limits(load_bot("arcade"))
    tools = spec.config.tools.model_copy(update={"enabled": False})
    spec = dataclasses.replace(spec, config=spec.config.model_copy(update={"tools": tools}))
    async with runtime_factory("arcade", spec=spec) as rt:
        assert rt.tools is None
        await rt.engine.collect(make_turn("hi", platform="discord"))
    body = fake_openai.chat_requests[-1].body
    assert "tools" not in body
    assert NO_TOOLS in body["messages"][0]["content"]
