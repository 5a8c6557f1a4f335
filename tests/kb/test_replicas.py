"""Two replicas (two clients, two KnowledgeBase objects, as two processes would have) see a re-ingest
without a restart; a broken artifact leaves them serving the index they have."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as aioredis

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
