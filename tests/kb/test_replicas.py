"""Two replicas (two clients, two KnowledgeBase objects, as two processes would have) see a re-ingest
without a restart; a broken artifact leaves them serving the index they have."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from core.errors import StoreUnavailable
from core.kb.retrieve import KnowledgeBase
from core.kb.store import KbStore
from core.keys import KeySpace
from tests.kb.conftest import kb_cfg, run_ingest
from tests.scale.helpers import eventually


async def test_two_replicas_pick_up_a_reingest(redis_url: str, help_centre: Path) -> None:
    writer = aioredis.Redis.from_url(redis_url, decode_responses=True)
    clients = [
        aioredis.Redis.from_url(redis_url, decode_responses=True),
        aioredis.Redis.from_url(redis_url, decode_responses=True),
    ]
    try:
        await run_ingest(writer, help_centre.parent)
        replicas = [
            KnowledgeBase(kb_cfg(check_interval=0.05), KbStore(c, KeySpace("testbot"))) for c in clients
        ]
        for kb in replicas:
            await kb.__aenter__()
        try:
            for kb in replicas:
                before = await kb.retrieve("How long does express delivery take?")
                assert "1 to 2 working days" in before.prompt_block()
            (help_centre / "shipping" / "times.md").write_text(
                "# Shipping times\n## Express\nExpress delivery takes one working day now.\n"
            )
            report = await run_ingest(writer, help_centre.parent)
            assert report.version == 2

            async def both_updated() -> bool:
                return all(kb.index is not None and kb.index.version == 2 for kb in replicas)

            await eventually(both_updated, what="both replicas on version 2")
            for kb in replicas:
                after = await kb.retrieve("How long does express delivery take?")
                assert "one working day now" in after.prompt_block()
                assert "1 to 2 working days" not in after.prompt_block()

            # A corrupt publish: replicas log it and keep serving version 2.
            await writer.set("parley:testbot:{kb-testbot}:artifact:3", "bm90IGFuIGluZGV4")
            await writer.set("parley:testbot:{kb-testbot}:version", 3)
            await asyncio.sleep(0.3)  # several check intervals: each replica tried, and failed, to load it
            for kb in replicas:
                assert kb.index is not None and kb.index.version == 2
                assert kb._poller is not None and not kb._poller.done()  # still polling
                assert (await kb.retrieve("express delivery")).hits
        finally:
            for kb in replicas:
                await kb.aclose()
    finally:
        for c in (writer, *clients):
            await c.aclose()


async def test_status_info_after_ingest(redis_client: aioredis.Redis, help_centre: Path) -> None:
    await run_ingest(redis_client, help_centre.parent)
    info = await KbStore(redis_client, KeySpace("testbot")).info()
    assert info["version"] == "1" and info["documents"] == "4" and info["embed_model"] == ""
    assert "4 pages (4 new" in info["summary"]


class _LosesOneCancel(KbStore):
    """A store whose first read turns a cancellation into its own error, as a client library may."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reading = asyncio.Event()
        self.armed = False  # the poller's reads only (not the start-up's)
        self.lost = 0

    async def version(self) -> int:
        if self.armed and not self.lost:
            self.reading.set()
            try:
                await asyncio.sleep(30)  # a slow read
            except asyncio.CancelledError:
                self.lost += 1
                raise StoreUnavailable("cancelled mid-read") from None
        return await super().version()


async def test_close_ends_the_poller_even_when_a_cancellation_is_lost(redis_client: aioredis.Redis) -> None:
    store = _LosesOneCancel(redis_client, KeySpace("testbot"))
    kb = KnowledgeBase(kb_cfg(check_interval=0.01), store)
    await kb.__aenter__()
    poller = kb._poller
    assert poller is not None
    store.armed = True
    await asyncio.wait_for(store.reading.wait(), 10)  # the poller inside the slow read
    await asyncio.wait_for(kb.aclose(), 10)  # waited for good before: the poller went on polling
    assert poller.done() and store.lost == 1
