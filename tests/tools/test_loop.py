"""The tool loop against the fake LLM: bounded rounds, timeouts, denials, confirmation, audit."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from pydantic import BaseModel, Field

from core.llm import ChatMessage, LLMDelta, LLMEnd, LLMRequest
from core.tools.config import ToolsConfig
from core.tools.function import function_tool
from core.tools.loop import ToolConfirm, ToolEvent
from core.tools.spec import ToolContext
from tests.core.helpers import make_turn
from tests.fakes.openai_server import Call, Reply, ToolCalls

SYSTEM = "You are a test bot."


@function_tool
async def lookup(order_id: Annotated[str, Field(description="order number")]) -> str:
    """Find an order."""
    return f"order {order_id}: shipped"


@function_tool
async def slow(seconds: float = 5.0) -> str:
    """A tool that takes its time."""
    await asyncio.sleep(seconds)
    return "finally"


class Refund(BaseModel):
    order_id: str
    amount: float = Field(gt=0, le=50)


REFUNDS: list[dict[str, Any]] = []


@function_tool(side_effects=True)
async def refund(args: Refund, ctx: ToolContext) -> str:
    """Refund an order (goodwill, up to 50 EUR)."""
    REFUNDS.append({"user": ctx.turn.author.id, **args.model_dump()})
    return f"refunded {args.amount} on {args.order_id}"


@function_tool(admin_only=True)
async def wipe() -> str:
    """Admins only."""
    return "wiped"


def request(text: str = "hi") -> LLMRequest:
    return LLMRequest([ChatMessage("system", SYSTEM), ChatMessage("user", text)], "fake-model")


async def run(kit: Any, turn: Any, req: LLMRequest | None = None) -> list[Any]:
    return [e async for e in kit.loop.run(req or request(), turn)]


def text_of(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, LLMDelta))


async def test_function_tool_schema_from_hints_and_model() -> None:
    assert lookup.spec.parameters["properties"]["order_id"]["description"] == "order number"
    assert lookup.spec.parameters["required"] == ["order_id"]
    assert lookup.spec.description == "Find an order."
    props = refund.spec.parameters["properties"]
    assert set(props) == {"order_id", "amount"}  # ctx is not in the schema
    assert props["amount"]["maximum"] == 50
    assert refund.spec.side_effects
    assert not lookup.spec.side_effects


async def test_read_only_call_then_answer(loop_factory: Any) -> None:
    kit = await loop_factory(tools=[lookup])
    kit.fake.queue(ToolCalls([Call("lookup", {"order_id": "A1"})]), Reply("Your order A1 has shipped."))
    events = await run(kit, make_turn("where is A1?"))
    assert text_of(events) == "Your order A1 has shipped."
    assert [e.outcome for e in events if isinstance(e, ToolEvent)] == ["ok"]
    first, second = kit.fake.chat_requests
    assert [t["function"]["name"] for t in first.body["tools"]] == ["lookup"]
    tool_msg = second.body["messages"][-1]
    assert tool_msg["role"] == "tool"
    assert "order A1: shipped" in tool_msg["content"]
    assert '<tool_result tool="lookup">' in tool_msg["content"]  # fenced as untrusted
    assert "untrusted" in tool_msg["content"]
    assert second.body["messages"][-2]["tool_calls"][0]["function"]["name"] == "lookup"


async def test_loop_is_bounded(loop_factory: Any) -> None:
    kit = await loop_factory(tools=[lookup], config=ToolsConfig(max_rounds=2))
    kit.fake.responder = lambda body: ToolCalls([Call("lookup", {"order_id": "again"})])
    events = await run(kit, make_turn("loop forever"))
    assert len(kit.fake.chat_requests) == 3  # two rounds with tools, one final round without
    assert "tools" not in kit.fake.chat_requests[-1].body
    end = events[-1]
    assert isinstance(end, LLMEnd)
    assert end.finish_reason == "tool_rounds_exhausted"
    assert text_of(events)  # the user is told something, never an empty reply


async def test_timeout_is_reported_to_the_model(loop_factory: Any) -> None:
    kit = await loop_factory(tools=[slow], config=ToolsConfig(timeout_seconds=0.2))
    kit.fake.queue(ToolCalls([Call("slow", {"seconds": 5})]), Reply("The lookup is slow right now."))
    events = await run(kit, make_turn("go"))
    assert [e.outcome for e in events if isinstance(e, ToolEvent)] == ["timeout"]
    told = kit.fake.chat_requests[1].body["messages"][-1]
    assert told["role"] == "tool"
    assert 'outcome="timeout"' in told["content"]
    assert "0.2s" in told["content"]
    audit = await kit.events.recent(platform="test", workspace="w1", count=5)
    assert audit[0]["category"] == "slow"
    assert audit[0]["action"] == "timeout"


async def test_denied_and_invalid_calls_are_reported(loop_factory: Any) -> None:
    kit = await loop_factory(
        tools=[lookup, wipe, refund], config=ToolsConfig(channels={"c1": ["lookup", "refund"]})
    )
    kit.fake.queue(
        ToolCalls(
            [
                Call("wipe", {}),
                Call("nope", {}),
                Call("lookup", "{broken"),
                Call("refund", {"order_id": "A1", "amount": 999}),
            ]
        ),
        Reply("ok"),
    )
    await run(kit, make_turn("do things"))
    offered = [t["function"]["name"] for t in kit.fake.chat_requests[0].body["tools"]]
    assert offered == ["lookup", "refund"]  # the channel's list, and wipe is admin-only anyway
    told = [m["content"] for m in kit.fake.chat_requests[1].body["messages"] if m["role"] == "tool"]
    assert 'tool="wipe" outcome="denied"' in told[0]
    assert 'tool="nope" outcome="denied"' in told[1]
    assert 'tool="lookup" outcome="invalid"' in told[2]
    assert 'tool="refund" outcome="invalid"' in told[3]  # validated before the user is ever asked
    assert "amount" in told[3]


async def test_side_effect_waits_for_that_users_click(loop_factory: Any, redis_client: Any) -> None:
    REFUNDS.clear()
    kit = await loop_factory(tools=[lookup, refund])
    kit.fake.queue(
        ToolCalls([Call("lookup", {"order_id": "A1"}), Call("refund", {"order_id": "A1", "amount": 20})]),
    )
    turn = make_turn("refund A1 please", user="alice")
    events = await run(kit, turn)
    confirms = [e for e in events if isinstance(e, ToolConfirm)]
    assert len(confirms) == 1
    pending = confirms[0].pending
    assert json.loads(json.dumps(pending.arguments)) == {"order_id": "A1", "amount": 20}
    assert '"amount": 20' in confirms[0].text  # the exact arguments are shown
    assert isinstance(events[-1], LLMEnd)
    assert events[-1].finish_reason == "tool_confirm"
    assert REFUNDS == []  # nothing ran yet
    assert await redis_client.ttl(kit.loop.pending.key(pending.id)) > 0

    # Someone else clicks: refused, and the call stays pending for alice.
    mallory = make_turn("", user="mallory")
    out = [e async for e in kit.loop.resume(pending.id, mallory, confirmed=True, system=SYSTEM)]
    assert "Only the person who asked" in text_of(out)
    assert REFUNDS == []

    kit.fake.queue(Reply("Done: 20 EUR refunded on A1."))
    alice = make_turn("", user="alice")
    out = [e async for e in kit.loop.resume(pending.id, alice, confirmed=True, system=SYSTEM)]
    assert REFUNDS == [{"user": "alice", "order_id": "A1", "amount": 20.0}]
    assert text_of(out) == "Done: 20 EUR refunded on A1."
    final = kit.fake.chat_requests[-1].body["messages"]
    assert final[0] == {"role": "system", "content": SYSTEM}  # rebuilt, not stored
    tool_ids = [m["tool_call_id"] for m in final if m["role"] == "tool"]
    assert len(tool_ids) == 2  # the lookup result and the refund result both answer their calls

    # A second click does nothing.
    again = [e async for e in kit.loop.resume(pending.id, alice, confirmed=True, system=SYSTEM)]
    assert "already answered" in text_of(again)
    assert len(REFUNDS) == 1

    actions = [
        (e["category"], e["action"])
        for e in await kit.events.recent(platform="test", workspace="w1", count=20)
    ]
    assert ("refund", "pending") in actions
    assert ("refund", "ok") in actions
    assert ("lookup", "ok") in actions


async def test_cancel_is_reported_to_the_model(loop_factory: Any) -> None:
    REFUNDS.clear()
    kit = await loop_factory(tools=[refund])
    kit.fake.queue(ToolCalls([Call("refund", {"order_id": "A9", "amount": 5})]))
    events = await run(kit, make_turn("refund", user="bob"))
    pending = next(e for e in events if isinstance(e, ToolConfirm)).pending
    kit.fake.queue(Reply("Okay, I won't."))
    out = [
        e
        async for e in kit.loop.resume(pending.id, make_turn("", user="bob"), confirmed=False, system=SYSTEM)
    ]
    assert text_of(out) == "Okay, I won't."
    assert REFUNDS == []
    told = kit.fake.chat_requests[-1].body["messages"][-1]
    assert 'outcome="cancelled"' in told["content"]


async def test_two_side_effects_at_once_one_is_asked(loop_factory: Any) -> None:
    REFUNDS.clear()
    kit = await loop_factory(tools=[refund])
    kit.fake.queue(
        ToolCalls(
            [Call("refund", {"order_id": "A1", "amount": 5}), Call("refund", {"order_id": "A2", "amount": 6})]
        )
    )
    events = await run(kit, make_turn("refund both"))
    pending = next(e for e in events if isinstance(e, ToolConfirm)).pending
    assert pending.arguments["order_id"] == "A1"
    stored = [m for m in pending.messages if m["role"] == "tool"]
    assert 'outcome="not_run"' in stored[0]["content"]


async def test_results_are_redacted_and_capped(loop_factory: Any) -> None:
    @function_tool
    async def profile() -> str:
        """Customer profile."""
        return "email ana@example.com " + "x" * 5000

    kit = await loop_factory(
        tools=[profile],
        config=ToolsConfig(max_result_chars=200),
        redact_model=lambda t: t.replace("ana@example.com", "[email]"),
    )
    kit.fake.queue(ToolCalls([Call("profile", {})]), Reply("ok"))
    await run(kit, make_turn("who am I"))
    told = kit.fake.chat_requests[1].body["messages"][-1]["content"]
    assert "ana@example.com" not in told
    assert "[email]" in told
    assert "more characters cut" in told
    assert len(told) < 1000


async def test_metrics_count_calls(loop_factory: Any) -> None:
    kit = await loop_factory(tools=[lookup])
    kit.fake.queue(ToolCalls([Call("lookup", {"order_id": "A1"})]), Reply("ok"))
    await run(kit, make_turn("x"))
    rendered = kit.metrics.render().decode()
    assert 'parley_tool_calls_total{bot="toolbot",outcome="ok",tool="lookup"} 1.0' in rendered


async def test_bot_allow_list_hides_and_denies(loop_factory: Any) -> None:
    kit = await loop_factory(tools=[lookup, slow], config=ToolsConfig(allow=["lookup"]))
    assert [s.name for s in kit.registry.available(make_turn("x"))] == ["lookup"]
    kit.fake.queue(ToolCalls([Call("slow", {"seconds": 0})]), Reply("ok"))
    await run(kit, make_turn("x"))
    assert [t["function"]["name"] for t in kit.fake.chat_requests[0].body["tools"]] == ["lookup"]
    told = kit.fake.chat_requests[1].body["messages"][-1]["content"]
    assert 'outcome="denied"' in told  # asked anyway: denied, never run


async def test_text_of_each_round_is_its_own_paragraph(loop_factory: Any) -> None:
    kit = await loop_factory(tools=[lookup])
    kit.fake.queue(
        ToolCalls([Call("lookup", {"order_id": "A1"})], text="Let me check."), Reply("It shipped.")
    )
    events = await run(kit, make_turn("where is A1?"))
    assert text_of(events) == "Let me check.\n\nIt shipped."
    assert kit.fake.chat_requests[1].body["messages"][-2]["content"] == "Let me check."
