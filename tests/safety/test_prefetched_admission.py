"""Admission checks ride on the turn's memory read; turns no gate judges give back what the read took."""

from __future__ import annotations

import dataclasses

from bots.loader import load_bot
from core.bot import BotSpec, RateWindow
from core.types import Author, Place, ReplyKind, Turn
from tests.conftest import RuntimeFactory
from tests.fakes.openai_server import FakeOpenAI

PLACE = Place("test", "w1", "c1", "t1")


def strict_rate(count: int) -> BotSpec:
    """The shipped arcade bot with a per-user limit of ``count`` answers per minute."""
    spec = load_bot("arcade")
    limits = spec.config.limits.model_copy(update={"user_rate": [RateWindow(count=count, seconds=60)]})
    return dataclasses.replace(spec, config=spec.config.model_copy(update={"limits": limits}))


def turn(text: str, event_id: str = "") -> Turn:
    return Turn(author=Author("u1", "Ada"), place=PLACE, text=text, event_id=event_id)


async def test_duplicate_deliveries_cost_no_rate_budget(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    async with runtime_factory(spec=strict_rate(2)) as rt:
        first = await rt.engine.collect(turn("hello", event_id="Ev1"))
        for _ in range(5):  # Slack retries, a second replica: all duplicates
            assert (await rt.engine.collect(turn("hello", event_id="Ev1"))).kind is ReplyKind.IGNORED
        second = await rt.engine.collect(turn("again", event_id="Ev2"))
        third = await rt.engine.collect(turn("more", event_id="Ev3"))
    assert first.kind is second.kind is ReplyKind.ANSWER
    assert third.kind is ReplyKind.REFUSAL and third.meta["reason"] == "rate_limited"
    assert len(fake_openai.chat_requests) == 2


async def test_a_paused_thread_costs_no_rate_budget_nor_slots(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    async with runtime_factory(spec=strict_rate(2)) as rt:
        await rt.engine.pause(turn(""), "handoff")
        for i in range(4):
            assert (await rt.engine.collect(turn(f"anyone? {i}"))).kind is ReplyKind.IGNORED
        await rt.engine.resume(turn(""))
        answers = [await rt.engine.collect(turn(f"back {i}")) for i in range(2)]
        slots = await rt.redis.keys(rt.keys.scoped("limit", "slots", "*"))
        held = [m for key in slots if not key.endswith(":clock") for m in await rt.redis.zrange(key, 0, -1)]
    assert [a.kind for a in answers] == [ReplyKind.ANSWER, ReplyKind.ANSWER]
    assert held == []
