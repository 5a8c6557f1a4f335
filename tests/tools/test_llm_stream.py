"""The LLM port with tools: streamed argument fragments assembled by index; <think> never shown."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from core.errors import LLMTimeout
from core.llm import ChatMessage, LLMDelta, LLMEnd, LLMRequest, LLMToolCalls, OpenAILLM, _EventLines
from core.think import ThinkFilter, strip_think
from tests.conftest import make_settings
from tests.fakes.openai_server import Call, FakeOpenAI, Hang, Reply, ToolCalls

TOOL = {"type": "function", "function": {"name": "order_status", "parameters": {"type": "object"}}}


async def _events(fake: FakeOpenAI, request: LLMRequest, **settings: Any) -> list[object]:
    llm = OpenAILLM(make_settings(openai_base_url=fake.base_url, openai_api_key="k", **settings))
    try:
        return [e async for e in llm.stream(request)]
    finally:
        await llm.aclose()


async def test_parallel_tool_calls_are_assembled_by_index(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(
        ToolCalls(
            [
                Call("order_status", {"order_id": "A1001", "note": "x" * 40}),
                Call("order_status", {"order_id": "A1002"}),
            ],
            text="Let me check.",
            arg_chunk_chars=3,
        )
    )
    request = LLMRequest([ChatMessage("user", "where are my orders?")], "fake-model", tools=[TOOL])
    events = await _events(fake_openai, request)
    text = "".join(e.text for e in events if isinstance(e, LLMDelta))
    calls = [e for e in events if isinstance(e, LLMToolCalls)]
    assert text == "Let me check."
    assert len(calls) == 1
    first, second = calls[0].calls
    assert first.name == second.name == "order_status"
    assert json.loads(first.arguments) == {"order_id": "A1001", "note": "x" * 40}
    assert json.loads(second.arguments) == {"order_id": "A1002"}
    assert first.id != second.id
    end = events[-1]
    assert isinstance(end, LLMEnd)
    assert end.finish_reason == "tool_calls"
    # The tools went to the server in the request.
    assert fake_openai.chat_requests[-1].body["tools"] == [TOOL]


async def test_tool_messages_are_sent_in_openai_shape(fake_openai: FakeOpenAI) -> None:
    from core.llm import ToolCall

    fake_openai.queue(Reply("done"))
    call = ToolCall("call_1", "order_status", '{"order_id": "A1"}')
    messages = [
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", "shipped", tool_call_id="call_1"),
    ]
    await _events(fake_openai, LLMRequest(messages, "fake-model"))
    sent = fake_openai.chat_requests[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "order_status", "arguments": '{"order_id": "A1"}'}
    assert sent[2] == {"role": "tool", "content": "shipped", "tool_call_id": "call_1"}


async def test_think_blocks_split_across_deltas_never_stream(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(
        Reply(
            "<think>the user wants X, secret plan</think>\n\nHello there! <think>more</think>Bye",
            chunk_chars=3,
        )
    )
    events = await _events(fake_openai, LLMRequest([ChatMessage("user", "hi")], "fake-model"))
    shown = "".join(e.text for e in events if isinstance(e, LLMDelta))
    assert shown == "Hello there! Bye"
    assert all("think" not in e.text for e in events if isinstance(e, LLMDelta))


def test_think_filter_every_split_point() -> None:
    text = "<think>hidden</think> Visible <b>bold</b> <thi and more"
    expected = strip_think(text)
    assert expected == "Visible <b>bold</b> <thi and more"
    for cut in range(len(text)):
        for cut2 in range(cut, len(text)):
            f = ThinkFilter()
            out = f.feed(text[:cut]) + f.feed(text[cut:cut2]) + f.feed(text[cut2:]) + f.flush()
            assert out == expected, (cut, cut2)


def test_unclosed_think_is_dropped_and_plain_text_untouched() -> None:
    assert strip_think("<think>still thinking") == ""
    assert strip_think("no tags here <thinking is fine>") == "no tags here <thinking is fine>"
    f = ThinkFilter()
    assert f.feed("<THINK>x") + f.flush() == ""


HI = LLMRequest([ChatMessage("user", "hi")], "fake-model")


async def test_a_first_token_timeout_is_retried_once(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(Hang(30), Reply("second try"))
    events = await _events(fake_openai, HI, parley_llm_first_token_timeout=0.3)
    assert "".join(e.text for e in events if isinstance(e, LLMDelta)) == "second try"
    assert len(fake_openai.chat_requests) == 2


async def test_a_second_first_token_timeout_ends_the_reply(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(Hang(30), Hang(30), Reply("never asked for"))
    with pytest.raises(LLMTimeout):
        await _events(fake_openai, HI, parley_llm_first_token_timeout=0.3)
    assert len(fake_openai.chat_requests) == 2


async def test_no_retry_when_the_total_budget_cannot_hold_another_wait(fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(Hang(30), Reply("too late"))
    # 1 s to the first token, 1.5 s in all: no room for a second 1 s wait. (0.3 s / 0.5 s was too short on a
    # busy machine: the client gave up before its first request reached the fake, and 0 requests were seen.)
    with pytest.raises(LLMTimeout):
        await _events(fake_openai, HI, parley_llm_first_token_timeout=1.0, parley_llm_total_timeout=1.5)
    assert len(fake_openai.chat_requests) == 1


async def test_the_first_text_comes_at_once_and_the_rest_in_batches(fake_openai: FakeOpenAI) -> None:
    hold = asyncio.Event()
    text = "".join(f"w{i:02d} " for i in range(40))
    fake_openai.queue(Reply(text, chunk_chars=4, delay=0.005, hold=hold, hold_at=1))
    llm = OpenAILLM(make_settings(openai_base_url=fake_openai.base_url, openai_api_key="k"))
    try:
        events = aiter(llm.stream(HI))
        first = await anext(events)  # the server holds chunk 1 until we have seen chunk 0
        hold.set()
        rest = [e async for e in events]
    finally:
        await llm.aclose()
    assert isinstance(first, LLMDelta) and first.text == "w00 "
    deltas = [e for e in rest if isinstance(e, LLMDelta)]
    assert first.text + "".join(d.text for d in deltas) == text
    # 39 chunks 5 ms apart, read after a pause of OpenAILLM's batch: several chunks per delta.
    assert len(deltas) < 39 / 2
    assert isinstance(rest[-1], LLMEnd)


def test_event_lines_across_pieces_crlf_comments_and_an_unterminated_last_line() -> None:
    lines = _EventLines()
    assert lines.feed(b': keep-alive\r\n\r\ndata: {"a"') == []
    assert lines.feed(b": 1}\r\n\r\nevent: x\ndata: 2\n\ndata: [DO") == [b'{"a": 1}', b"2"]
    assert lines.feed(b"NE]") == []
    assert lines.end() == [b"[DONE]"]
