"""Over the generation cap, turns wait in a fair line for a slot: everyone is answered, nobody is refused."""

from __future__ import annotations

import asyncio
from typing import Any

from core.types import ReplyDone, ReplyKind, ReplyNotice, ReplyResult, Turn
from tests.fakes.openai_server import Reply
from tests.safety.conftest import NO_LIMITS, ModerationFake, SafetyFactory, make_turn


def slow(seconds: float) -> Any:
    """Every chat request takes about ``seconds`` (time to first token), echoing the user's message."""

    def respond(body: dict[str, Any]) -> Reply:
        return Reply(f"answer to {body['messages'][-1]['content']}", first_delay=seconds)

    return respond


def user_turn(user: str, text: str) -> Turn:
    return make_turn(text, user=user, channel=f"C-{user}-{text}")


def asked(fake: ModerationFake) -> list[str]:
    """The user messages in the order the LLM received them."""
    return [r.body["messages"][-1]["content"] for r in fake.chat_requests]


def quick_polls(rt: Any) -> None:
    """Waiters ask again at a quarter of their expected wait, from a first guess of 3 s per generation
    (up to 2 s between asks): these tests' answers take 0.05-0.15 s, so start the guess there."""
    rt.safety.admission.generation_seconds = 0.1


async def arrived(rt: Any, count: int) -> None:
    """Until ``count`` turns have come to the line (the acquire script's arrival count): arrival order is
    then the order the test created them in, however slowly a loaded machine runs each turn up to there."""
    async with asyncio.timeout(30):
        while True:
            clocks = await rt.redis.keys(rt.keys.scoped("limit", "slots", "*") + ":clock")
            if clocks and int(await rt.redis.hget(clocks[0], "#") or 0) >= count:
                return
            await asyncio.sleep(0.005)


async def test_ten_users_over_a_cap_of_two_are_all_answered_two_at_a_time(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    fake_openai.responder = slow(0.15)
    async with safety_factory("arcade", limits={**NO_LIMITS, "max_concurrent_per_workspace": 2}) as rt:
        quick_polls(rt)
        tasks = []
        for i in range(10):  # in arrival order
            tasks.append(asyncio.create_task(rt.engine.collect(user_turn(f"u{i}", f"q{i}"))))
            await arrived(rt, i + 1)
        results = await asyncio.gather(*tasks)
        keys = await rt.redis.keys(rt.keys.scoped("limit", "slots", "*"))
        left = [m for key in keys if not key.endswith(":clock") for m in await rt.redis.zrange(key, 0, -1)]
    assert [r.kind for r in results] == [ReplyKind.ANSWER] * 10
    assert fake_openai.peak_chat_in_flight == 2
    # First come, first served across users. With two slots, two turns let in together (two slots freed at
    # once) may reach the model in either order, so each is asked at most one place from its arrival.
    order = [int(q[1:]) for q in asked(fake_openai)]
    assert sorted(order) == list(range(10))
    assert all(abs(place - arrival) <= 1 for place, arrival in enumerate(order)), order
    assert left == []  # every slot given back, nobody left in line


async def test_one_user_flooding_does_not_delay_another_by_more_than_one_turn(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    fake_openai.responder = slow(0.5)
    async with safety_factory("arcade", limits={**NO_LIMITS, "max_concurrent_per_workspace": 2}) as rt:
        flood = []
        for i in range(10):  # one user, ten threads at once
            flood.append(asyncio.create_task(rt.engine.collect(user_turn("flooder", f"flood {i}"))))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the flood is in line before the second user writes
        single = await rt.engine.collect(user_turn("ada", "just one question"))
        results = await asyncio.gather(*flood)
    assert single.kind is ReplyKind.ANSWER and all(r.kind is ReplyKind.ANSWER for r in results)
    order = asked(fake_openai)
    # Ada wrote while two flood turns held both slots: hers is the next to start, or the one after.
    assert order.index("just one question") in (2, 3), order
    assert fake_openai.peak_chat_in_flight == 2


async def test_a_long_wait_is_told_once_and_the_turn_is_still_answered(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    fake_openai.responder = slow(0.4)
    limits = {**NO_LIMITS, "max_concurrent_per_workspace": 1, "busy_after_seconds": 0}
    async with safety_factory("arcade", limits=limits) as rt:
        first = asyncio.create_task(rt.engine.collect(user_turn("u1", "first")))
        await asyncio.sleep(0.1)
        events = [e async for e in rt.engine.reply(user_turn("u2", "second"))]
        await first
    notices = [e for e in events if isinstance(e, ReplyNotice)]
    done = events[-1]
    assert len(notices) == 1 and "talking to me" in notices[0].text
    assert isinstance(done, ReplyDone) and done.result.kind is ReplyKind.ANSWER
    assert done.result.text == "answer to second"  # the notice is not part of the answer
    assert fake_openai.peak_chat_in_flight == 1


async def test_past_the_longest_wait_the_turn_ends_busy_and_leaves_the_line(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    fake_openai.responder = slow(1.5)
    limits = {**NO_LIMITS, "max_concurrent_per_workspace": 1, "max_queue_seconds": 0.3}
    async with safety_factory("arcade", limits=limits) as rt:
        first = asyncio.create_task(rt.engine.collect(user_turn("u1", "first")))
        await asyncio.sleep(0.1)
        busy: ReplyResult = await rt.engine.collect(user_turn("u2", "second"))
        keys = await rt.redis.keys(rt.keys.scoped("limit", "slots", "*") + ":line")
        waiting = [m for key in keys for m in await rt.redis.zrange(key, 0, -1)]
        answered = await first
    assert busy.kind is ReplyKind.REFUSAL and busy.meta["reason"] == "busy"
    assert busy.text == rt.bot.persona(None).busy or "try again" in busy.text
    assert waiting == []
    assert answered.kind is ReplyKind.ANSWER
    assert asked(fake_openai) == ["first"]  # the busy turn made no LLM call


async def test_two_replicas_share_one_line_and_one_cap(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    # One slot between two replicas: a slot is only ever given to the head of the line, so the order the
    # model is asked in is exactly the arrival order (each turn's arrival awaited before the next is made).
    fake_openai.responder = slow(0.05)
    limits = {**NO_LIMITS, "max_concurrent_per_workspace": 1}
    async with safety_factory("arcade", limits=limits) as a, safety_factory("arcade", limits=limits) as b:
        quick_polls(a)
        quick_polls(b)
        tasks = []
        for i in range(8):
            replica = (a, b)[i % 2]
            tasks.append(asyncio.create_task(replica.engine.collect(user_turn(f"u{i}", f"q{i}"))))
            await arrived(a, i + 1)
        results = await asyncio.gather(*tasks)
    assert [r.kind for r in results] == [ReplyKind.ANSWER] * 8
    assert fake_openai.peak_chat_in_flight == 1  # one cap for both replicas (two separate caps would allow 2)
    assert asked(fake_openai) == [f"q{i}" for i in range(8)]
