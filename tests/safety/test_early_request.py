"""``[moderation] early_llm_request`` (arcade ships it on): the LLM request leaves while the input's verdict
is pending, and nothing of it is used before an allow: a refused input shows nothing of it, runs no tool and
stores nothing; a rewritten input cancels it and sends the rewritten text."""

from __future__ import annotations

import asyncio

from bots.loader import load_bot
from core.bot import ModerationConfig
from core.types import ReplyDelta, ReplyDone, ReplyEvent, ReplyKind, Turn
from tests.fakes.openai_server import Call, ToolCalls
from tests.safety.conftest import ModerationFake, SafetyFactory, make_turn
from tests.scale.helpers import eventually


async def events_of(rt: object, turn: Turn) -> list[ReplyEvent]:
    return [event async for event in rt.engine.reply(turn)]  # type: ignore[attr-defined]


async def until_chat_requests(fake: ModerationFake, count: int) -> None:
    async def arrived() -> bool:
        return len(fake.chat_requests) >= count

    await eventually(arrived, within=10.0, what=f"{count} chat request(s)")


HELD = {"timeout_seconds": 20.0}  # a held verdict is not a moderation timeout (fail-open) in these tests


def test_off_unless_a_bot_asks_and_the_shipped_choices() -> None:
    assert ModerationConfig().early_llm_request is False
    assert load_bot("arcade").config.moderation.early_llm_request is True  # relaxed, fail-open
    assert load_bot("support").config.moderation.early_llm_request is False  # strict, fail-closed


async def test_the_request_leaves_before_the_verdict_and_is_read_after_an_allow(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    async with safety_factory("arcade", moderation=HELD) as rt:
        fake_openai.verdicts_held = asyncio.Event()  # (after the start-up probe of the endpoint)
        checks = len(fake_openai.moderation_requests)
        answer = asyncio.create_task(rt.engine.collect(make_turn("tell me a riddle", user="a")))
        await until_chat_requests(fake_openai, 1)  # sent while the verdict is held
        assert len(fake_openai.moderation_requests) == checks + 1 and not answer.done()
        fake_openai.verdicts_held.set()
        result = await answer
    assert result.kind is ReplyKind.ANSWER and result.text == "You said: tell me a riddle"
    assert len(fake_openai.chat_requests) == 1  # the early request was the answer: not sent again


async def test_a_refused_input_shows_nothing_runs_no_tool_and_stores_nothing(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    fake_openai.scores = {"slur": ("hate", 0.8)}  # refused by arcade's relaxed profile
    # The early request's answer is a tool call, then text: neither may be used.
    fake_openai.queue(ToolCalls([Call("roll_dice", {"count": 2})]), ToolCalls([Call("roll_dice")]))
    async with safety_factory("arcade", moderation=HELD) as rt:
        fake_openai.verdicts_held = asyncio.Event()
        turn = make_turn("a slur joke", user="a")
        reply = asyncio.create_task(events_of(rt, turn))
        await until_chat_requests(fake_openai, 1)
        fake_openai.verdicts_held.set()
        events = await reply
        state = await rt.engine.memory.load(turn.place, tail=50)
    assert len(events) == 1 and isinstance(events[0], ReplyDone)
    assert not any(isinstance(e, ReplyDelta) for e in events)
    assert events[0].result.kind is ReplyKind.REFUSAL and events[0].result.meta["category"] == "hate"
    assert len(fake_openai.chat_requests) == 1  # no tool result went back to the model: no tool ran
    assert state.messages == ()  # nothing stored, the user's refused words included


async def test_a_rewritten_input_cancels_the_early_request_and_sends_the_rewritten_text(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    fake_openai.scores = {"kill": ("violence", 0.9)}
    async with safety_factory("arcade", moderation={**HELD, "actions": {"violence": "redact"}}) as rt:
        fake_openai.verdicts_held = asyncio.Event()
        answer = asyncio.create_task(rt.engine.collect(make_turn("kill the boss", user="a")))
        await until_chat_requests(fake_openai, 1)
        fake_openai.verdicts_held.set()
        result = await answer
    early, sent = fake_openai.chat_requests
    assert early.body["messages"][-1]["content"].endswith("kill the boss")  # the early one, unread
    assert sent.body["messages"][-1]["content"].endswith("[message removed by moderation]")
    assert result.kind is ReplyKind.ANSWER and "kill" not in result.text
