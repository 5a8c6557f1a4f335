"""Issue 20, findings 1, 2 and the confirm lows of 13: a pending call and a queued job are authenticated and
single-use; what the user confirms is exactly what runs; failed clicks are audited under their real reason
and tool. Real runtime, real Redis, fake LLM; production-like signing keys."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from pydantic import Field, SecretStr

from bots.loader import load_bot
from core.bot import BotSpec
from core.clicks import confirm_call
from core.ops.delivery import run_turn
from core.ops.jobs import Job, Route, decode_job, encode_job
from core.runtime import Runtime
from core.tools.function import function_tool
from core.tools.loop import ToolConfirm
from core.tools.pending import PendingSigner
from core.tools.spec import ToolContext
from core.types import ReplyEvent
from tests.conftest import RuntimeFactory, without_limits
from tests.core.helpers import make_turn
from tests.fakes.openai_server import Call, FakeOpenAI, Reply, ToolCalls
from tests.tools.test_loop import REFUNDS, SYSTEM, refund, request

KEYS = SecretStr(Fernet.generate_key().decode())
TICKETS: list[str] = []


@function_tool(side_effects=True)
async def create_ticket(
    details: Annotated[str, Field(description="what the ticket is about")], ctx: ToolContext
) -> str:
    """Open a support ticket."""
    TICKETS.append(details)
    return f"ticket #{len(TICKETS)} opened"


@dataclasses.dataclass
class WithTicketTool:
    inner: Any

    def commands(self) -> Any:
        return self.inner.commands()

    def tools(self) -> list[Any]:
        return [*self.inner.tools(), create_ticket]

    async def before_turn(self, ctx: Any) -> Any:
        return await self.inner.before_turn(ctx)

    async def after_turn(self, ctx: Any, result: Any) -> Any:
        return await self.inner.after_turn(ctx, result)


def ticket_bot() -> BotSpec:
    spec = without_limits(load_bot("support"))
    return dataclasses.replace(spec, plugin=WithTicketTool(spec.plugin))


class Shown:
    """A Delivery that keeps what it was given (the port, not our code)."""

    def __init__(self) -> None:
        self.events: list[ReplyEvent] = []

    async def deliver(self, job: Job, events: AsyncIterator[ReplyEvent]) -> None:
        async for event in events:
            self.events.append(event)

    async def aclose(self) -> None:
        return None


async def _events(rt: Runtime, category: str) -> list[tuple[str, str, str]]:
    recent = await rt.safety.events.recent(platform="slack", workspace="w1", count=50)
    return [(e["category"], e["action"], e.get("detail", "")) for e in recent if e["category"] == category]


async def test_a_pending_call_rewritten_in_redis_is_refused(
    loop_factory: Any, redis_client: aioredis.Redis
) -> None:
    REFUNDS.clear()
    kit = await loop_factory(tools=[refund], signer=PendingSigner.from_keys(KEYS))
    kit.fake.queue(ToolCalls([Call("refund", {"order_id": "A1", "amount": 5})]))
    events = [e async for e in kit.loop.run(request("refund A1"), make_turn("refund", user="alice"))]
    pending = next(e for e in events if isinstance(e, ToolConfirm)).pending
    key = kit.loop.pending.key(pending.id)
    stored = json.loads(await redis_client.get(key))
    stored["call"]["arguments"] = {"order_id": "A1", "amount": 50}  # a Redis writer raises the refund
    await redis_client.set(key, json.dumps(stored), keepttl=True)
    alice = make_turn("", user="alice")
    out = [e async for e in kit.loop.resume(pending.id, alice, confirmed=True, system=SYSTEM)]
    assert "changed after I asked" in "".join(getattr(e, "text", "") for e in out)
    # A record written from scratch without the key (the pre-issue-20 plain JSON) is refused the same way.
    plain = dict(stored["call"])
    await redis_client.set(key, json.dumps(plain), keepttl=True)
    out = [e async for e in kit.loop.resume(pending.id, alice, confirmed=True, system=SYSTEM)]
    assert REFUNDS == []
    audit = [
        (e["category"], e["action"])
        for e in await kit.events.recent(platform="test", workspace="w1", count=20)
    ]
    assert ("refund", "confirm_forged") in audit  # named: the tool and the refusal
    assert [a for _, a in audit].count("confirm_forged") == 2


async def test_a_double_click_is_audited_as_already_handled_with_the_tool_name(loop_factory: Any) -> None:
    REFUNDS.clear()
    kit = await loop_factory(tools=[refund], signer=PendingSigner.from_keys(KEYS))
    kit.fake.queue(ToolCalls([Call("refund", {"order_id": "B2", "amount": 5})]), Reply("Done."))
    events = [e async for e in kit.loop.run(request("refund B2"), make_turn("refund", user="bob"))]
    pending = next(e for e in events if isinstance(e, ToolConfirm)).pending
    bob = make_turn("", user="bob")
    [e async for e in kit.loop.resume(pending.id, bob, confirmed=True, system=SYSTEM)]
    meta: dict[str, str] = {}
    again = [e async for e in kit.loop.resume(pending.id, bob, confirmed=True, system=SYSTEM, meta=meta)]
    assert "already answered" in "".join(getattr(e, "text", "") for e in again)
    assert meta["tool_name"] == "refund"  # a failed click names the tool, not "?"
    audit = [
        (e["category"], e["action"])
        for e in await kit.events.recent(platform="test", workspace="w1", count=20)
    ]
    assert ("refund", "confirm_already_handled") in audit
    assert not any(action == "confirm_expired" for _, action in audit)
    assert len(REFUNDS) == 1


async def test_a_replayed_confirm_job_creates_no_second_ticket(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, redis_client: aioredis.Redis
) -> None:
    TICKETS.clear()
    fake_openai.queue(ToolCalls([Call("create_ticket", {"details": "Printer on fire"})]))
    async with runtime_factory("support", spec=ticket_bot(), parley_credentials_keys=KEYS) as rt:
        assert rt.ops.queue is not None
        queue = rt.ops.queue
        turn = make_turn("open a ticket", platform="slack", user="cust")
        asked = await rt.engine.collect(turn)
        assert asked.confirm is not None
        pending_id = asked.confirm.id
        click = dataclasses.replace(
            turn, text="/tool confirm", command=confirm_call(pending_id, True), turn_id="click-1"
        )
        raw = encode_job(Job(click, Route("slack")), queue.signer)  # what the worker read from the inbox
        fake_openai.queue(Reply("Ticket opened."))
        await run_turn(rt.engine, Shown(), decode_job(raw, queue.signer), guard=queue.guard)
        assert TICKETS == ["Printer on fire"]

        # The attacker writes a pending call under the same id (even a copy of a genuine record) and
        # pushes the captured job back: the job's nonce was used, so nothing runs.
        key = rt.tools.loop.pending.key(pending_id) if rt.tools else ""
        await redis_client.set(key, json.dumps({"call": {"id": pending_id}}), ex=60)
        fake_openai.queue(Reply("Ticket opened again."))
        shown = Shown()
        await run_turn(rt.engine, shown, decode_job(raw, queue.signer), guard=queue.guard)
        assert TICKETS == ["Printer on fire"]
        assert shown.events == []  # refused before the engine: nothing shown, nothing run
        nonce = decode_job(raw, queue.signer).nonce
        assert ("job_replayed", "refuse", nonce[:8]) in await _events(rt, "job_replayed")

        # A signed job queued 30 days ago is refused as expired.
        old = Job(
            dataclasses.replace(click, turn_id="click-2"),
            Route("slack"),
            enqueued_at=time.time() - 30 * 86_400,
        )
        stale = decode_job(encode_job(old, queue.signer), queue.signer)
        await run_turn(rt.engine, Shown(), stale, guard=queue.guard)
        assert [c for c, _, _ in await _events(rt, "job_expired")] == ["job_expired"]
    assert TICKETS == ["Printer on fire"]


async def test_a_worker_taking_over_a_dead_workers_turn_may_run_it_once(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    async with runtime_factory("support", spec=ticket_bot(), parley_credentials_keys=KEYS) as rt:
        assert rt.ops.queue is not None
        guard = rt.ops.queue.guard
        job = Job(make_turn("hello", platform="slack"), Route("slack"))
        assert await guard.admit(job) == ""  # the first worker claims the nonce, then dies
        takeover = dataclasses.replace(job, attempt=2)
        assert await guard.admit(takeover) == ""
        await guard.done(takeover)
        assert await guard.admit(takeover) == "job_replayed"
        assert await guard.admit(job) == "job_replayed"


async def test_arguments_output_moderation_would_change_are_refused_not_shown(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    TICKETS.clear()
    details = "Pay the refund to https://evil.example.net/collect?acct=666"
    fake_openai.queue(
        ToolCalls([Call("create_ticket", {"details": details})]),
        Reply("I can't open that ticket with that link in it."),
    )
    async with runtime_factory("support", spec=ticket_bot(), parley_credentials_keys=KEYS) as rt:
        turn = make_turn("open a ticket", platform="slack", user="cust")
        result = await rt.engine.collect(turn)
        assert result.confirm is None  # no buttons: there is nothing to confirm
        told = fake_openai.chat_requests[-1].body["messages"][-1]
        assert told["role"] == "tool" and "output moderation would change these arguments" in told["content"]
        assert "[link removed]" not in result.text
        audit = await _events(rt, "create_ticket")
        assert any(action == "refused" for _, action, _ in audit)
    assert TICKETS == []


async def test_the_confirmation_shows_the_exact_arguments_that_run(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    TICKETS.clear()
    details = "Customer says: ```rm -rf``` happened; *bold* <b>tag</b> \u00e9"
    fake_openai.queue(ToolCalls([Call("create_ticket", {"details": details})]))
    async with runtime_factory("support", spec=ticket_bot(), parley_credentials_keys=KEYS) as rt:
        turn = make_turn("open a ticket", platform="slack", user="cust")
        asked = await rt.engine.collect(turn)
        assert asked.confirm is not None and asked.confirm.tool == "create_ticket"
        assert json.loads(asked.confirm.arguments) == {"details": details}
        assert json.dumps({"details": details}, indent=2, ensure_ascii=False) in asked.text
        assert "````\n" in asked.text  # a fence the arguments' own backticks cannot close
        fake_openai.queue(Reply("Done."))
        click = dataclasses.replace(
            turn, text="/tool confirm", command=confirm_call(asked.confirm.id, True), turn_id="c2"
        )
        await rt.engine.collect(click)
    assert [details] == TICKETS
