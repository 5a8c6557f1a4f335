"""The console's daily aggregates and price table, on the real redis-server."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bots.loader import load_bot
from core.console.settings import DEFAULT_PRICES, ConsoleSettings, Price, PriceTable
from core.console.stats import (
    BUCKETS,
    DailyStats,
    Tally,
    bucket_of,
    day_of,
    decode_place,
    encode_place,
    queue_vote,
)
from core.keys import KeySpace
from core.runtime import open_runtime
from core.types import Author, Place, ReplyKind, ReplyResult, Turn, Usage
from tests.conftest import make_app, make_settings, without_limits
from tests.core.helpers import CountingConnection, make_turn
from tests.fakes.openai_server import FakeOpenAI

KEYS = KeySpace("testbot")
PLACE = Place("slack", "T1", "C1", "1700000000.000100")


def _stats(client: aioredis.Redis, **kw: object) -> DailyStats:
    return DailyStats(
        client,
        KEYS,
        PriceTable(DEFAULT_PRICES),
        model_for=lambda persona: "gpt-4o-mini",
        **kw,  # type: ignore[arg-type]
    )


def _turn(place: Place = PLACE, user: str = "U1") -> Turn:
    return Turn(author=Author(id=user), place=place, text="hi")


def _result(
    kind: ReplyKind = ReplyKind.ANSWER,
    tokens: tuple[int, int] = (1000, 200),
    *,
    handoff: bool = False,
    **meta: str,
) -> ReplyResult:
    return ReplyResult("t1", kind, "text", persona="agent", usage=Usage(*tokens), handoff=handoff, meta=meta)


# ------------------------------------------------------------------ price table


def test_price_table_exact_prefix_and_unknown() -> None:
    table = PriceTable(DEFAULT_PRICES)
    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.15 + 0.60)
    # A dated snapshot is priced like its family; the longest known prefix wins (gpt-4o-mini, not gpt-4o).
    assert table.cost("gpt-4o-mini-2024-07-18", 2_000_000, 0) == pytest.approx(0.30)
    assert table.cost("gpt-4o-2024-08-06", 0, 1_000_000) == pytest.approx(10.0)
    assert table.price("llama3") is None
    assert table.cost("llama3", 10**6, 10**6) == 0.0


def test_price_table_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PARLEY_CONSOLE_PRICES",
        '{"llama3": {"input": 0.1, "output": 0.2}, "gpt-4o": {"input": 1, "output": 2}}',
    )
    table = ConsoleSettings(_env_file=None).price_table  # type: ignore[call-arg]
    assert table.price("llama3") == Price(input=0.1, output=0.2)
    assert table.price("gpt-4o") == Price(input=1, output=2)  # overrides the default
    assert table.price("gpt-4o-mini") == DEFAULT_PRICES["gpt-4o-mini"]  # the rest stays


def test_bad_price_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.console.settings import load_console_settings
    from core.errors import ConfigError

    monkeypatch.setenv("PARLEY_CONSOLE_PRICES", '{"m": {"input": -1, "output": 0}}')
    with pytest.raises(ConfigError, match="PARLEY_CONSOLE_PRICES"):
        load_console_settings(_env_file=None)
    monkeypatch.delenv("PARLEY_CONSOLE_PRICES")
    monkeypatch.setenv("PARLEY_CONSOLE_PASSWORD", "short")
    with pytest.raises(ConfigError, match="PARLEY_CONSOLE_PASSWORD") as caught:
        load_console_settings(_env_file=None)
    assert "short" not in str(caught.value).replace("PARLEY", "")


# ------------------------------------------------------------------ pure parts


def test_buckets_and_percentiles() -> None:
    assert bucket_of(0.1) == 0 and bucket_of(0.5) == 0 and bucket_of(0.51) == 1
    assert bucket_of(10_000) == len(BUCKETS) - 1
    tally = Tally()
    assert tally.percentile(0.5) is None
    # 10 answers in (1, 2] s, 10 in (5, 8] s: the median is at the top of the first group's bucket.
    tally.histogram[bucket_of(1.5)] = 10
    tally.histogram[bucket_of(6)] = 10
    assert tally.percentile(0.5) == pytest.approx(2.0)
    assert tally.percentile(0.95) == pytest.approx(5 + 3 * 0.9)
    slow = Tally()
    slow.histogram[-1] = 3
    assert slow.percentile(0.95) == BUCKETS[-2]  # past the last bound: its lower edge, not infinity
    assert not math.isinf(slow.percentile(0.5) or 0)


def test_place_round_trip() -> None:
    odd = Place("discord", "G|1", "C:2", "")
    assert decode_place(encode_place(odd)) == odd
    assert decode_place(encode_place(PLACE)) == PLACE


# ------------------------------------------------------------------ writes and reads on Redis


async def test_queue_only_queues_and_record_aggregates(redis_client: aioredis.Redis) -> None:
    stats = _stats(redis_client)
    async with redis_client.pipeline(transaction=False) as pipe:
        stats.queue(pipe, _turn(), _result(), 1.5)
        assert len(pipe) > 0
        assert await redis_client.dbsize() == 0  # nothing sent until the owner executes
        await pipe.execute()
    await stats.record(_turn(), _result(ReplyKind.REFUSAL, (50, 0)), 0.2)
    await stats.record(_turn(), _result(ReplyKind.ERROR, (0, 0)), 9.0)
    await stats.record(_turn(), _result(handoff=True), 0.3)
    await stats.record(_turn(), _result(ReplyKind.IGNORED, (0, 0), reason="paused"), 0.1)  # not counted
    await stats.record(_turn(Place("discord", "G9", "C9")), _result(ReplyKind.COMMAND, (10, 10)), 0.1)

    ((day, rows),) = await stats.days(1)
    assert day == day_of(time.time())
    by = {(r.platform, r.workspace): r.tally for r in rows}
    slack = by[("slack", "T1")]
    assert slack.counts["answers"] == 1  # the handoff's reply counts once, as a handoff
    assert sum(slack.hours) == 4  # every reply, by the hour (the ignored one is not a reply)
    assert slack.counts["refusals"] == 1
    assert slack.counts["errors"] == 1
    assert slack.counts["handoffs"] == 1
    assert slack.counts["tok_in"] == 2050 and slack.counts["tok_out"] == 400
    assert slack.cost == pytest.approx((2050 * 0.15 + 400 * 0.60) / 1e6)
    assert sum(slack.histogram) == 2  # reply times of answers (the handoff's reply included)
    assert slack.histogram[bucket_of(1.5)] == 1 and slack.histogram[bucket_of(0.3)] == 1
    assert by[("discord", "G9")].counts["commands"] == 1
    ttl = await redis_client.ttl(stats.day_key(day))
    assert 34 * 86_400 < ttl <= 35 * 86_400

    recent = await stats.recent(10)
    assert [p for p, _ in recent] == [Place("discord", "G9", "C9"), PLACE]
    handoffs = await stats.handoffs(10, KEYS.meta)
    assert [(h.place, h.user, h.open) for h in handoffs] == [(PLACE, "U1", False)]  # meta not paused


async def test_indexes_stay_bounded(redis_client: aioredis.Redis) -> None:
    stats = _stats(redis_client, recent_max=10)
    for i in range(25):
        await stats.record(_turn(Place("slack", "T1", f"C{i}")), _result(handoff=True), 1.0)
    assert await redis_client.zcard(stats.recent_key) == 10
    assert await redis_client.zcard(stats.handoffs_key) == 10
    assert [p.channel for p, _ in await stats.recent(3)] == ["C24", "C23", "C22"]
    fields = await redis_client.hlen(stats.day_key(day_of(time.time())))
    assert fields < 20  # one workspace: a fixed set of metrics and buckets, whatever the traffic


async def test_votes_count_once_per_change(redis_client: aioredis.Redis) -> None:
    stats = _stats(redis_client)
    await stats.record_vote(PLACE, "up")
    await stats.record_vote(PLACE, "down", previous="up")  # a changed vote moves, it does not add
    async with redis_client.pipeline(transaction=False) as pipe:
        queue_vote(pipe, KEYS, PLACE, "up")
        await pipe.execute()
    ((_, rows),) = await stats.days(1)
    assert rows[0].tally.counts["up"] == 1 and rows[0].tally.counts["down"] == 1
    assert rows[0].tally.thumbs_up_rate == 0.5


async def test_days_are_oldest_first_and_separate(redis_client: aioredis.Redis) -> None:
    stats = _stats(redis_client)
    now = time.time()
    async with redis_client.pipeline(transaction=False) as pipe:
        stats.queue(pipe, _turn(), _result(), 1.0, now=now - 86_400)
        stats.queue(pipe, _turn(), _result(), 1.0, now=now)
        stats.queue(pipe, _turn(), _result(), 1.0, now=now)
        await pipe.execute()
    series = await stats.days(3, now=now)
    assert [d for d, _ in series] == [day_of(now - 2 * 86_400), day_of(now - 86_400), day_of(now)]
    assert [sum(r.tally.counts["answers"] for r in rows) for _, rows in series] == [0, 1, 2]


async def test_turns_write_their_aggregates_on_the_final_write(
    redis_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """Real turns through the engine (arcade bot, fake LLM): an answer's aggregates ride on its memory
    write (still two round trips), a refusal that writes nothing is recorded at the finish stage."""
    pool = aioredis.ConnectionPool.from_url(
        redis_url, decode_responses=True, connection_class=CountingConnection
    )
    client = aioredis.Redis(connection_pool=pool)
    settings = make_settings(openai_base_url=fake_openai.base_url, parley_data_dir=tmp_path)
    console = ConsoleSettings(_env_file=None, parley_console_prices={"fake-model": {"input": 1, "output": 2}})  # type: ignore[call-arg]
    try:
        async with open_runtime(
            without_limits(load_bot("arcade")), make_app(settings, console=console), redis=client
        ) as rt:
            assert rt.stats is not None
            await rt.engine.collect(make_turn("warm up"))  # scripts loaded, connection open
            await client.flushdb()  # only the measured turns' aggregates (scripts stay loaded)
            before = CountingConnection.sends
            result = await rt.engine.collect(make_turn("hello bot", event_id="ev-1"))
            sends = CountingConnection.sends - before
            too_long = await rt.engine.collect(make_turn("x" * 10_000))
            ((_, rows),) = await rt.stats.days(1)
            recent = await rt.stats.recent(5)
    finally:
        await client.aclose()
        await pool.aclose()
    assert result.kind is ReplyKind.ANSWER and too_long.kind is ReplyKind.REFUSAL
    assert sends == 2, sends  # read + write: the aggregates rode on the write
    (row,) = rows
    tokens_in, tokens_out = result.usage.prompt_tokens, result.usage.completion_tokens
    assert tokens_in > 0 and tokens_out > 0
    assert row.tally.counts["answers"] == 1 and row.tally.counts["refusals"] == 1
    assert (row.tally.counts["tok_in"], row.tally.counts["tok_out"]) == (tokens_in, tokens_out)
    assert row.tally.cost == pytest.approx((tokens_in * 1 + tokens_out * 2) / 1e6)
    assert sum(row.tally.histogram) == 1  # answers only
    assert [p for p, _ in recent] == [make_turn("x").place]
