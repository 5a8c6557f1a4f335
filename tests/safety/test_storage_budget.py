"""Issue 20, finding 3: a stored-bytes budget per user and per conversation covers every write to memory,
and commands that are not conversation (``/tool`` junk) are not remembered."""

from __future__ import annotations

import dataclasses

from core.runtime import Runtime
from core.types import CommandCall, ImageRef, ReplyKind, Turn
from tests.core.helpers import make_turn
from tests.safety.conftest import NO_LIMITS, ModerationFake, SafetyFactory

JUNK = "x" * 900


async def stored_bytes(rt: Runtime, turn: Turn) -> int:
    state = await rt.engine.memory.load(turn.place, tail=500)
    return sum(len(m.text.encode()) for m in state.messages)


async def test_tool_junk_is_not_remembered(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    async with safety_factory("arcade", limits=NO_LIMITS) as rt:
        assert rt.tools is not None
        turn = make_turn(f"/tool {JUNK}", platform="discord", command=CommandCall("tool", JUNK))
        result = await rt.engine.collect(turn)
        assert result.text.startswith("Usage: /tool confirm")
        assert await stored_bytes(rt, turn) == 0


async def test_a_user_over_the_stored_bytes_budget_is_refused_on_every_path(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    limits = {**NO_LIMITS, "user_daily_stored_bytes": 3_000, "conversation_daily_stored_bytes": 0}
    async with safety_factory("arcade", limits=limits) as rt:
        refused = None
        for i in range(20):  # each turn stores ~1 KB of the user's words plus the reply
            turn = make_turn(f"{i} {JUNK}", platform="discord", channel=f"c{i}")  # a new conversation each
            result = await rt.engine.collect(turn)
            if result.kind is ReplyKind.REFUSAL:
                refused = i
                break
        assert refused is not None and refused <= 4
        assert result.meta["reason"] == "quota_exceeded" and result.meta["limit"] == "stored-user"
        assert "can't keep any more" in result.text
        # Commands and image notes are refused too while the budget is spent.
        story = make_turn(
            "/story a cat", platform="discord", channel="cx", command=CommandCall("story", "a cat")
        )
        assert (await rt.engine.collect(story)).meta.get("limit") == "stored-user"
        ref = ImageRef("https://cdn.discordapp.com/a/1/x.png", "image/png", 10, "x.png", "", "9")
        pic = dataclasses.replace(make_turn("look", platform="discord", channel="cy"), images=(ref,))
        assert (await rt.engine.collect(pic)).meta.get("limit") == "stored-user"
        # Another user is not affected.
        other = make_turn("hello", platform="discord", user="u2", channel="cz")
        assert (await rt.engine.collect(other)).kind is not ReplyKind.REFUSAL


async def test_one_conversation_has_a_budget_of_its_own(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    limits = {**NO_LIMITS, "user_daily_stored_bytes": 0, "conversation_daily_stored_bytes": 2_500}
    async with safety_factory("arcade", limits=limits) as rt:
        results = []
        for i in range(6):  # different users, one channel
            turn = make_turn(JUNK, platform="discord", user=f"u{i}", channel="shared")
            results.append(await rt.engine.collect(turn))
        assert results[-1].meta.get("limit") == "stored-conversation"
        assert await stored_bytes(rt, turn) < 2_500 + 2_000  # at most one turn beyond the budget
