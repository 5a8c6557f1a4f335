"""``/forget``: nothing about the user is left in Redis (checked by SCAN over every key and value), other
people's messages survive, and forgetting does not reset a limit."""

from __future__ import annotations

from core.ops.jobs import Job, Route, decode_job
from core.ops.queue import SubmitStatus, TurnQueue
from core.types import CommandCall, ReplyKind
from tests.fakes.openai_server import Reply
from tests.safety.conftest import NO_LIMITS, ModerationFake, SafetyFactory, make_turn, redis_dump

ADA = "U0ADA4242"
BOB = "U0BOB7777"


async def test_forget_leaves_no_key_or_value_of_the_user(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    fake_openai.scores = {"punch": ("violence", 0.99)}
    limits = {**NO_LIMITS, "user_rate": [{"count": 50, "seconds": 60}], "user_daily_tokens": 1_000_000}
    async with safety_factory("support", limits=limits) as rt:
        # Ada: a DM, a shared channel thread, a flagged (refused) message, a story, personal data.
        dm = {"user": ADA, "name": "Ada", "channel": "D0ADA", "thread": ""}
        await rt.engine.collect(make_turn("my email is ada.lovelace@example.com", **dm))
        await rt.engine.collect(make_turn("I want to punch the courier", **dm))  # refused + recorded
        fake_openai.queue(Reply("Once upon a time, Ada's order arrived."))
        await rt.engine.collect(make_turn("", command=CommandCall("story", "my order"), **dm))
        shared = {"channel": "C0SHARED", "thread": "1700.1"}
        await rt.engine.collect(
            make_turn("Ada here: AdaSecretHobby is knitting", user=ADA, name="Ada", **shared)
        )
        await rt.engine.collect(make_turn("Bob here: I like trains", user=BOB, name="Bob", **shared))
        await rt.engine.pause(make_turn("x", user=ADA, **shared), "handoff")
        before = await redis_dump(rt.redis)
        assert any(ADA in k for k in before) and any(ADA in v for v in before.values())

        done = await rt.engine.collect(make_turn("/forget", user=ADA, channel="C0OTHER"))
        after = await redis_dump(rt.redis)
        await rt.engine.resume(make_turn("x", user=BOB, **shared))  # the hand-off Ada asked for is over
        bob_turn = await rt.engine.collect(make_turn("what do I like?", user=BOB, name="Bob", **shared))

    assert done.kind is ReplyKind.COMMAND and done.ephemeral
    # Ada's 3 stored messages and 3 replies (the refused one was never stored), in a DM and a shared thread.
    assert "deleted 6 stored messages (yours and my replies to them) in 2 conversations" in done.text
    leftovers = {k: v for k, v in after.items() if ADA in k or ADA in v or "Ada" in v or "knitting" in v}
    assert leftovers == {}, leftovers
    assert "lovelace" not in str(after) and "courier" not in str(after)
    # Bob's words in the shared thread are still there, and the bot still uses them.
    assert any("I like trains" in v for k, v in after.items() if k.endswith(":msgs"))
    assert "Bob here: I like trains" in str(fake_openai.chat_requests[-1].body)
    assert "AdaSecretHobby" not in str(fake_openai.chat_requests[-1].body)
    assert bob_turn.kind is ReplyKind.ANSWER


async def test_forget_is_idempotent_and_says_when_there_is_nothing(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    async with safety_factory("arcade") as rt:
        nothing = await rt.engine.collect(make_turn("/forget", user=ADA))
        await rt.engine.collect(make_turn("hello", user=ADA))
        first = await rt.engine.collect(make_turn("/forget", user=ADA))
        second = await rt.engine.collect(make_turn("/forget", user=ADA))
    assert nothing.text == second.text == "I have nothing stored about you. Nothing to forget."
    assert "deleted 2 stored messages (yours and my replies to them) in 1 conversation," in first.text


async def test_forget_cannot_reset_a_quota(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    async with safety_factory("arcade", limits={**NO_LIMITS, "user_daily_tokens": 50}) as rt:
        await rt.engine.collect(make_turn("hello", user=ADA))
        await rt.engine.collect(make_turn("/forget", user=ADA))
        keys = [k async for k in rt.redis.scan_iter(count=500)]
        again = await rt.engine.collect(make_turn("hello again", user=ADA))
    assert not any(ADA in k for k in keys)  # the quota counter is keyed by a one-way tag ...
    assert any(":limit:quota:user:" in k for k in keys)  # ... and it is still there
    assert again.kind is ReplyKind.REFUSAL and again.meta["reason"] == "quota_exceeded"


async def test_forget_can_be_switched_off(safety_factory: SafetyFactory, fake_openai: ModerationFake) -> None:
    async with safety_factory("arcade", privacy={"forget_command": False}) as rt:
        assert "forget" not in rt.engine.commands
    async with safety_factory("arcade") as rt:
        assert "forget" in rt.engine.commands


async def test_forget_removes_the_users_turns_still_waiting_in_a_queue(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    async with safety_factory("arcade") as rt:
        assert rt.safety is not None
        queue = TurnQueue(rt.redis, rt.keys)
        shared = {"channel": "C0Q", "thread": "9.9"}
        for turn in (
            make_turn("Bob is being answered", user=BOB, **shared),  # the inbox's head: being answered
            make_turn("AdaQueuedSecret one", user=ADA, **shared),
            make_turn("Bob again", user=BOB, **shared),
            make_turn("AdaQueuedSecret two", user=ADA, **shared),
        ):
            assert (await queue.submit(Job(turn, Route("test")))).status is SubmitStatus.QUEUED
        inbox = queue.inbox(make_turn("x", **shared).place)
        done = await rt.safety.forget("slack", ADA)
        waiting = await rt.redis.lrange(inbox, 0, -1)
    assert done.records == 2
    assert [decode_job(item).turn.text for item in waiting] == ["Bob is being answered", "Bob again"]
