"""Transcript search: the index written with each turn's memory write, AND queries, retention, highlights."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from core.console.places import encode_place
from core.console.search import SearchIndex, highlight, terms
from core.keys import KeySpace
from core.memory import NewMessage
from core.types import Place
from tests.conftest import RuntimeFactory
from tests.core.helpers import make_turn

KEYS = KeySpace("t")


def test_terms_keep_words_numbers_and_order_ids() -> None:
    # Stop words, one-letter words and "'s" go; numbers and ids stay, lower-cased.
    assert terms(["Where is my order A-1001? It's #42, thanks Zoë!"]) == [
        "order",
        "1001",
        "42",
        "thanks",
        "zoë",
    ]
    assert terms(["order A1001 order"]) == ["order", "a1001"]


def test_highlight_marks_whole_words_only() -> None:
    parts = highlight("Order A1001 and A10010", ["a1001"])
    assert [p for p, hit in parts if hit] == ["A1001"]
    assert "".join(p for p, _ in parts) == "Order A1001 and A10010"  # nothing lost or changed


async def _write(client: aioredis.Redis, index: SearchIndex, place: Place, text: str, now: float) -> None:
    async with client.pipeline(transaction=False) as pipe:
        pipe.rpush(KEYS.messages(place), f"1|{NewMessage('user', text, 5, 'U1', 'Dana').encode()}")
        index.queue(pipe, place, [text, "Dana"], now=now)
        await pipe.execute()


async def test_all_terms_must_match_newest_first_within_retention(redis_client: aioredis.Redis) -> None:
    index = SearchIndex(redis_client, KEYS, ttl_seconds=3600)
    now = time.time()
    a, b, old = (Place("slack", "T1", "C1", t) for t in ("1.1", "2.2", "3.3"))
    await _write(redis_client, index, a, "refund for order A1001 please", now - 10)
    await _write(redis_client, index, b, "refund my order A2002", now - 5)
    await _write(redis_client, index, old, "refund order A1001 again", now - 7200)  # past retention
    found = await index.search("refund order")
    assert [h.place for h in found.hits] == [b, a] and found.total == 2
    found = await index.search("A1001 refund")
    assert [h.place for h in found.hits] == [a]
    ((_message, parts),) = found.hits[0].lines
    assert [p for p, hit in parts if hit] == ["refund", "A1001"]
    assert (await index.search("dana")).total == 2  # the writer's name
    assert (await index.search("nothing-like-this")).total == 0
    assert (await index.search("  ?! ")).terms == []
    await redis_client.delete(KEYS.messages(b))  # /forget, or expired: no longer shown
    assert [h.place for h in (await index.search("refund order")).hits] == [a]


async def test_a_turn_is_searchable_once_written(runtime_factory: RuntimeFactory) -> None:
    async with runtime_factory("support") as rt:
        await rt.engine.collect(make_turn("my parcel Q7781 never came", name="Fox Mulder"))
        assert rt.stats is not None and rt.stats.search is not None
        found = await rt.stats.search.search("Q7781 mulder")
    assert [h.place.thread for h in found.hits] == ["t1"]
    assert next(m.text for m, _ in found.hits[0].lines) == "my parcel Q7781 never came"


async def test_a_write_indexes_every_term_in_one_command_with_the_ttl(redis_client: aioredis.Redis) -> None:
    # redis-py packs each command in Python: two per term (ZADD + EXPIRE) were ~80 commands for a reply.
    index = SearchIndex(redis_client, KEYS, ttl_seconds=3600)
    place = Place("slack", "T1", "C9", "9.9")
    async with redis_client.pipeline(transaction=False) as pipe:
        index.queue(pipe, place, ["refund for order A1001 please", "Dana"], now=1_700_000_000.5)
        assert len(pipe) == 1
        await pipe.execute()
    for term in ("refund", "order", "a1001", "please", "dana"):
        assert await redis_client.zscore(index.key(term), encode_place(place)) == 1_700_000_000.5
        assert 3590 < await redis_client.ttl(index.key(term)) <= 3600
    async with redis_client.pipeline(transaction=False) as pipe:
        index.queue(pipe, place, ["a ?!"])  # no terms: nothing to send
        assert len(pipe) == 0
