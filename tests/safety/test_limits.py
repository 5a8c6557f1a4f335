"""Rate limits, token quotas and concurrent generations: exact under concurrency, reset at the window's end,
refused without an LLM call and with a reply that says when to try again."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from core.keys import KeySpace
from core.safety.limits import LimitStore, Window
from core.types import CommandCall, ReplyKind, ReplyResult, Turn
from tests.fakes.openai_server import Reply
from tests.safety.conftest import NO_LIMITS, ModerationFake, SafetyFactory, make_turn


async def wait_for_window_start(client: aioredis.Redis, seconds: int) -> None:
    """Sleep until just after the server clock starts a new ``seconds`` window (quota windows are aligned)."""
    now_s, now_us = await client.time()
    now = now_s + now_us / 1e6
    await asyncio.sleep(seconds - (now % seconds) + 0.02)


def count(results: list[ReplyResult], kind: ReplyKind, reason: str | None = None) -> int:
    return sum(1 for r in results if r.kind is kind and (reason is None or r.meta.get("reason") == reason))


async def test_100_concurrent_requests_against_a_limit_of_10_admit_exactly_10(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    limits = {**NO_LIMITS, "user_rate": [{"count": 10, "seconds": 60}]}
    async with safety_factory("arcade", limits=limits) as rt:
        turns = [make_turn(f"message {i}", thread=f"t{i}", event_id=f"e{i}") for i in range(100)]
        results = await asyncio.gather(*(rt.engine.collect(t) for t in turns))
    assert count(results, ReplyKind.ANSWER) == 10
    assert len(fake_openai.chat_requests) == 10  # the other 90 made no LLM call
    assert count(results, ReplyKind.REFUSAL, "rate_limited") == 1  # told once ...
    assert count(results, ReplyKind.IGNORED, "rate_limited") == 89  # ... then ignored, not 90 replies


async def test_the_limit_script_is_exact_under_concurrency(redis_client: aioredis.Redis) -> None:
    store = LimitStore(redis_client, KeySpace("limits-test"))
    await store.load()
    window = Window(10, 60)

    async def one(i: int) -> bool:
        outcomes, _ = await store.run([store.rate("user", "u", window, f"m{i}")])
        return outcomes[0].admitted

    admitted = await asyncio.gather(*(one(i) for i in range(100)))
    assert sum(admitted) == 10
    outcomes, _ = await store.run([store.rate("user", "u", window, "late")])
    assert not outcomes[0].admitted and 59_000 < outcomes[0].retry_ms <= 60_000


async def test_over_the_rate_the_reply_says_when_and_the_window_slides(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    limits = {**NO_LIMITS, "user_rate": [{"count": 2, "seconds": 0.6}]}
    async with safety_factory("arcade", limits=limits) as rt:
        first = [await rt.engine.collect(make_turn(f"hi {i}")) for i in range(2)]
        refused = await rt.engine.collect(make_turn("one more"))
        silent = await rt.engine.collect(make_turn("and more"))
        await asyncio.sleep(0.65)
        again = await rt.engine.collect(make_turn("after the window"))
    assert [r.kind for r in first] == [ReplyKind.ANSWER, ReplyKind.ANSWER]
    assert refused.kind is ReplyKind.REFUSAL and refused.ephemeral
    assert refused.text == "You're sending messages faster than I can answer. Please try again in 1 second."
    assert refused.meta == {"reason": "rate_limited", "limit": "user", "retry_after": "1"}
    assert silent.kind is ReplyKind.IGNORED and silent.meta["silent"] == "1"
    assert again.kind is ReplyKind.ANSWER
    assert len(fake_openai.chat_requests) == 3


async def test_channel_rate_limit_counts_everyone_in_the_channel(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    limits = {**NO_LIMITS, "channel_rate": [{"count": 3, "seconds": 60}]}
    async with safety_factory("support", limits=limits) as rt:
        results = [await rt.engine.collect(make_turn("hello", user=f"u{i}")) for i in range(4)]
        elsewhere = await rt.engine.collect(make_turn("hello", user="u9", channel="C2"))
    assert [r.kind for r in results] == [ReplyKind.ANSWER] * 3 + [ReplyKind.REFUSAL]
    assert (
        results[-1].meta["limit"] == "channel" and "This channel is keeping me very busy" in results[-1].text
    )
    assert elsewhere.kind is ReplyKind.ANSWER


async def test_token_quotas_count_reported_usage_and_reset_at_the_window_end(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    limits = {
        **NO_LIMITS,
        "user_daily_tokens": 50,
        "workspace_daily_tokens": 10_000,
        "quota_window_seconds": 1,
    }
    async with safety_factory("arcade", limits=limits) as rt:
        await wait_for_window_start(rt.redis, 1)
        first = await rt.engine.collect(make_turn("hello"))  # a few hundred prompt tokens: over 50
        over = await rt.engine.collect(make_turn("again"))
        other_user = await rt.engine.collect(make_turn("me too", user="u2"))  # own quota
        await wait_for_window_start(rt.redis, 1)  # no sleeping for a day: a one-second "day"
        reset = await rt.engine.collect(make_turn("new window"))
    assert first.kind is ReplyKind.ANSWER and first.usage.total > 50
    assert over.kind is ReplyKind.REFUSAL and over.meta["reason"] == "quota_exceeded"
    assert over.meta["retry_after"] == "1"
    assert over.text == "You've reached your usage limit for today. It resets in 1 second."
    assert other_user.kind is ReplyKind.ANSWER
    assert reset.kind is ReplyKind.ANSWER
    assert len(fake_openai.chat_requests) == 3  # no LLM call for the refused turn


async def test_workspace_quota_covers_every_user_of_the_workspace(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    limits = {**NO_LIMITS, "workspace_daily_tokens": 100}
    async with safety_factory("arcade", limits=limits) as rt:
        first = await rt.engine.collect(make_turn("hello", user="a"))
        second = await rt.engine.collect(make_turn("hello", user="b"))
        other = await rt.engine.collect(make_turn("hello", user="c", workspace="T2"))
        ttl = await rt.redis.pttl(rt.safety.admission.store.quota_key("workspace", "slack:T1", 86_400))
    assert first.kind is ReplyKind.ANSWER
    assert second.kind is ReplyKind.REFUSAL and second.meta["limit"] == "workspace"
    assert second.text.startswith("This workspace has reached its usage limit for today. It resets in ")
    assert other.kind is ReplyKind.ANSWER
    assert 0 < ttl <= 86_400_000  # the counter ends with the UTC day


async def test_max_concurrent_generations_per_workspace(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    fake_openai.responder = lambda body: Reply("done", first_delay=0.4)
    limits = {**NO_LIMITS, "max_concurrent_per_workspace": 3}
    async with safety_factory("arcade", limits=limits) as rt:
        turns = [make_turn("go", user=f"u{i}", thread=f"t{i}") for i in range(10)]
        other_guild = asyncio.create_task(rt.engine.collect(make_turn("go", user="x", workspace="T2")))
        results = await asyncio.gather(*(rt.engine.collect(t) for t in turns))
        slots = rt.safety.admission.store.slots_key("slack", "T1")
        left = await rt.redis.zcard(slots)
        after = await rt.engine.collect(make_turn("go", user="late"))
        other = await other_guild
    # Over the cap turns wait their turn instead of being refused: all ten answered, three at a time (the
    # other guild's turn had slots of its own).
    assert count(results, ReplyKind.ANSWER) == 10
    assert fake_openai.peak_chat_in_flight == 4
    assert left == 0  # every slot was given back when its turn ended
    assert after.kind is ReplyKind.ANSWER and other.kind is ReplyKind.ANSWER


async def test_a_dead_replicas_slot_frees_itself_by_its_lease(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    limits = {**NO_LIMITS, "max_concurrent_per_workspace": 1}
    async with safety_factory("arcade", limits=limits) as rt:
        slots = rt.safety.admission.store.slots_key("slack", "T1")
        now_s, now_us = await rt.redis.time()
        await rt.redis.zadd(slots, {"ghost-turn": now_s * 1000 + now_us // 1000 + 300})  # lease: 0.3 s
        loop = asyncio.get_running_loop()
        started = loop.time()
        waited = await rt.engine.collect(make_turn("hello"))  # waits in line until the ghost's lease ends
        elapsed = loop.time() - started
    assert waited.kind is ReplyKind.ANSWER
    assert elapsed >= 0.2


async def test_only_turns_that_call_the_llm_are_limited(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    limits = {**NO_LIMITS, "user_rate": [{"count": 1, "seconds": 60}]}
    async with safety_factory("arcade", limits=limits) as rt:
        helps = [await rt.engine.collect(make_turn("/help")) for _ in range(5)]
        story = await rt.engine.collect(make_turn("", command=CommandCall("story", "a lighthouse")))
        chat = await rt.engine.collect(make_turn("hello"))
        console = [await rt.engine.collect(make_turn(f"hi {i}", platform="console")) for i in range(5)]
    assert all(h.kind is ReplyKind.COMMAND for h in helps)
    assert story.kind is ReplyKind.COMMAND  # /story calls the LLM: it took the one slot ...
    assert chat.kind is ReplyKind.REFUSAL  # ... so chat is refused
    assert all(c.kind is ReplyKind.ANSWER for c in console)  # your own terminal is exempt


async def test_commands_without_the_llm_and_oversized_messages_are_rate_limited_too(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    limits = {
        **NO_LIMITS,
        "user_rate": [{"count": 2, "seconds": 60}],
        "command_rate": [{"count": 3, "seconds": 60}],
        "max_input_chars": 100,
    }
    async with safety_factory("arcade", limits=limits) as rt:
        forgets = [await rt.engine.collect(make_turn("/forget", user="flooder")) for _ in range(6)]
        huge = [await rt.engine.collect(make_turn("x" * 500, user="shouter")) for _ in range(4)]
    assert [f.kind for f in forgets[:3]] == [ReplyKind.COMMAND] * 3
    assert forgets[3].kind is ReplyKind.REFUSAL and forgets[3].meta["reason"] == "rate_limited"
    assert all(f.kind is ReplyKind.IGNORED for f in forgets[4:])  # told once per window, then quiet
    assert [h.meta["reason"] for h in huge[:2]] == ["too_long", "too_long"]
    assert huge[2].meta["reason"] == "rate_limited" and huge[3].kind is ReplyKind.IGNORED
    assert fake_openai.chat_requests == []


async def test_direct_messages_outside_a_workspace_have_per_user_budgets(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    limits = {**NO_LIMITS, "workspace_daily_tokens": 1, "max_concurrent_per_workspace": 1}

    def dm(user: str, text: str) -> Turn:
        return make_turn(
            text, user=user, platform="discord", workspace="@me", channel=f"dm-{user}", thread=""
        )

    async with safety_factory("arcade", limits=limits) as rt:
        first = await rt.engine.collect(dm("mallory", "hello"))
        again = await rt.engine.collect(dm("mallory", "hello again"))
        others = [await rt.engine.collect(dm(user, "hi")) for user in ("ada", "bob")]
    assert first.kind is ReplyKind.ANSWER
    assert again.kind is ReplyKind.REFUSAL and again.meta["reason"] == "quota_exceeded"
    assert [o.kind for o in others] == [ReplyKind.ANSWER, ReplyKind.ANSWER]  # not starved by mallory


async def test_shipped_bots_limit_a_user_to_a_few_answers_per_ten_seconds(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    for bot in ("support", "arcade"):
        async with safety_factory(bot) as rt:
            results = [await rt.engine.collect(make_turn(f"question {i}", user=bot)) for i in range(8)]
        answers = count(results, ReplyKind.ANSWER)
        assert 2 <= answers <= 5, (bot, answers)
        assert results[answers].kind is ReplyKind.REFUSAL and "try again in" in results[answers].text
