from __future__ import annotations

from core.types import Author, Place, ReplyDelta, ReplyDone, ReplyKind, Turn
from tests.conftest import RuntimeFactory
from tests.fakes.openai_server import FakeOpenAI, Reply


def turn(text: str, user: str = "u1") -> Turn:
    return Turn(author=Author(user, "Ada"), place=Place("test", "w1", "c1", "t1"), text=text)


async def test_chat_turn_streams_and_remembers(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(Reply("Hello there, Ada!", chunk_chars=3))
    async with runtime_factory("arcade") as rt:
        events = [e async for e in rt.engine.reply(turn("hi"))]
        deltas = "".join(e.text for e in events if isinstance(e, ReplyDelta))
        done = events[-1]
        assert isinstance(done, ReplyDone)
        assert done.result.kind is ReplyKind.ANSWER
        assert deltas == done.result.text == "Hello there, Ada!"
        assert done.result.usage.completion_tokens > 0
        second = await rt.engine.collect(turn("again"))
        assert second.text == "You said: again"
    sent = fake_openai.chat_requests[-1].body["messages"]
    # system, the context (the speaker's name, as data) and its acknowledgement, one exchange, the new one
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert sent[3]["content"] == "hi"
    assert sent[4]["content"] == "Hello there, Ada!"
