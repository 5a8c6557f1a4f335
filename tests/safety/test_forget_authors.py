"""``/forget`` finds a conversation even after the user's own index expired, while others kept it alive."""

from __future__ import annotations

from core.types import ReplyKind
from tests.safety.conftest import NO_LIMITS, ModerationFake, SafetyFactory, make_turn

ADA = "U0ADA4242"
BOB = "U0BOB7777"
SHARED = {"channel": "C0SHARED", "thread": "1700.1"}


async def test_forget_reaches_conversations_the_index_no_longer_names(
    safety_factory: SafetyFactory, fake_openai: ModerationFake
) -> None:
    async with safety_factory("support", limits=NO_LIMITS) as rt:
        await rt.engine.collect(
            make_turn("Ada here: AdaSecretHobby is knitting", user=ADA, name="Ada", **SHARED)
        )
        place = make_turn("x", **SHARED).place
        assert await rt.redis.smembers(rt.keys.authors(place)) == {ADA}
        # Ada's index expires (her last message was long ago); Bob keeps the thread alive.
        await rt.redis.delete(rt.keys.user_conversations("slack", ADA))
        await rt.engine.collect(make_turn("Bob here: I like trains", user=BOB, name="Bob", **SHARED))
        done = await rt.engine.collect(make_turn("/forget", user=ADA, channel="C0OTHER"))
        stored = "\n".join(await rt.redis.lrange(rt.keys.messages(place), 0, -1))
        authors = await rt.redis.smembers(rt.keys.authors(place))
    assert done.kind is ReplyKind.COMMAND and "1 conversation" in done.text
    assert "AdaSecretHobby" not in stored and ADA not in stored
    assert "I like trains" in stored
    assert authors == {BOB}
