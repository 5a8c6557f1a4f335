"""The load bench's machinery at N=2, quickly, so it cannot rot: counts only, never timings.

A real bot process (``parley run`` for arcade) against the fake Discord and the fake LLM, as in
``make bench-load``, with a faster LLM profile.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest

from tests.bench.load_bench import LLMProfile, Refusals, Run, bench, bench_info, percentile, report
from tests.fakes.openai_server import FakeOpenAI

MESSAGES = "POST /channels/{channel_id}/messages"


@pytest.mark.slow
async def test_two_users_two_replies(redis_url: str, tmp_path: Path) -> None:
    profile = LLMProfile(first_token=0.05, tokens_per_s=400.0, reply_tokens=12)
    outcome = await bench(
        [Run("shipped", 2)], profile, tmp_path, redis_url=redis_url, time_limit=30, idle_seconds=0.5
    )
    [result] = outcome.results

    assert (result.replies, result.busy, result.other, result.unanswered) == (2, 0, 0, 0)
    assert result.llm_chat_calls == 2  # one generation per reply, counted by the fake LLM
    assert 1 <= result.peak_llm_in_flight <= 2
    assert result.rest_routes.get(MESSAGES) == 2  # one message posted in each user's channel
    assert result.rest_calls == sum(result.rest_routes.values())
    assert result.first_p50_s is not None and result.whole_p95_s is not None
    assert result.whole_p95_s >= result.first_p50_s > 0
    assert outcome.idle is not None and outcome.idle.bot_ms_per_s is not None
    assert outcome.idle.platform_calls == 0  # nothing was sent: the bot called nobody
    text = report([result], bench_info(profile, None), outcome.idle)
    rows = [line.split() for line in text.splitlines() if line.startswith("shipped")]
    assert [row[:2] + row[3:4] for row in rows] == [["shipped", "2", "2"]]  # run, N, replies


def test_busy_texts_recognised() -> None:
    refusals = Refusals("arcade")
    assert refusals.is_busy("The studio is packed! Try again in a few seconds.")
    assert not refusals.is_busy("Well, game play tale")


def test_nearest_rank_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0


async def test_fake_llm_counts_chat_requests_in_flight(fake_openai: FakeOpenAI) -> None:
    profile = LLMProfile(first_token=0.5, tokens_per_s=200.0, reply_tokens=6)
    fake_openai.responder = lambda body: profile.reply()
    client = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=0)

    async def ask(text: str) -> tuple[str, int]:
        stream = await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": text}], stream=True
        )
        chunks = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return "".join(chunks), sum(1 for c in chunks if c)

    try:
        fake_openai.reset_peak()
        answers = await asyncio.gather(ask("one"), ask("two"))
    finally:
        await client.close()
    assert answers == [(profile.text(), 6)] * 2  # one 5-character chunk per token
    assert fake_openai.peak_chat_in_flight == 2  # both waited for their first token together
    assert fake_openai.chat_in_flight == 0
