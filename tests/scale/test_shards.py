"""Discord shards leased across replicas (DISCORD_SHARD_LEASES): 4 shards over 2 replicas against the fake
gateway, identify buckets respected across them, and one replica killed: the other takes its shards."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from adapters.common.deps import EdgeDeps
from adapters.discord.adapter import DiscordAdapter
from adapters.discord.delivery import DiscordDelivery
from adapters.discord.settings import DiscordSettings
from core.ops.service import serve
from tests.conftest import RuntimeFactory
from tests.fakes.discord import FakeDiscord
from tests.net import LOOPBACK
from tests.scale.helpers import eventually

WINDOW = 0.4  # identify window per bucket (Discord: 5 s)


def _settings(fake: FakeDiscord) -> DiscordSettings:
    return DiscordSettings(  # type: ignore[call-arg]
        _env_file=None,
        token=fake.token,
        api_url=fake.api_url,
        guild_ready_timeout=0.05,
        login_backoff_base=0.05,
        shutdown_grace=1.0,
        identify_window=WINDOW,
        shard_leases=True,
        shard_lease=1.0,
        shard_heartbeat=0.3,
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(shards=4, max_concurrency=2) as fake:
        yield fake


def ready_shards(fake: FakeDiscord) -> set[int]:
    return {s.shard[0] for s in fake.sessions.values() if s.ready.is_set()}


@asynccontextmanager
async def replica(runtime_factory: RuntimeFactory, fake: FakeDiscord, *, service: bool) -> AsyncIterator[Any]:
    """A replica: the adapter under ``parley run``'s service with a worker (``service``), or the adapter's
    bare serve task (so that the test can kill it without the goodbye a shutdown gives)."""
    async with runtime_factory("arcade", port=0, parley_shutdown_grace=1.0, **LOOPBACK) as rt:
        deps = EdgeDeps.of(rt)
        settings = _settings(fake)
        rt.ops.deliveries.register("discord", DiscordDelivery(deps, settings))
        adapter = DiscordAdapter(deps, settings)
        stop = asyncio.Event()
        if service:
            task = asyncio.create_task(serve(rt, [("discord", adapter)], stop=stop, handle_signals=False))
        else:
            task = asyncio.create_task(adapter.serve())
        try:
            yield adapter, task
        finally:
            stop.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await adapter.aclose()


async def test_two_replicas_split_four_shards_and_one_takes_over_when_the_other_dies(
    runtime_factory: RuntimeFactory, fake: FakeDiscord
) -> None:
    async with (
        replica(runtime_factory, fake, service=False) as (doomed, doomed_task),
        replica(runtime_factory, fake, service=True) as (survivor, _),
    ):
        await asyncio.wait_for(asyncio.gather(doomed.ready.wait(), survivor.ready.wait()), 20)
        assert doomed.client is not None and survivor.client is not None
        mine, theirs = set(survivor.client.shard_ids or []), set(doomed.client.shard_ids or [])
        assert (len(mine), len(theirs)) == (2, 2)
        assert mine | theirs == {0, 1, 2, 3} == ready_shards(fake)
        # One IDENTIFY per bucket (shard % max_concurrency) per window, across both replicas.
        for bucket in (0, 1):
            times = sorted(i.at for i in fake.identifies if i.shard[0] % 2 == bucket)
            assert all(b - a >= WINDOW * 0.9 for a, b in itertools.pairwise(times)), times

        # The doomed replica dies: no goodbye (its leases stay until they run out), its sockets drop.
        doomed_task.cancel()
        await asyncio.gather(doomed_task, return_exceptions=True)
        await doomed.client.close()

        async def taken_over() -> bool:
            client = survivor.client
            return (
                client is not None
                and set(client.shard_ids or []) == {0, 1, 2, 3}
                and survivor.ready.is_set()
                and ready_shards(fake) >= {0, 1, 2, 3}
            )

        await eventually(taken_over, within=30, what="the survivor running all four shards")
        await fake.send_message("still there?", mention_bot=True)
        await fake.wait_for(
            lambda: any(m["content"] == "You said: still there?" for m in fake.bot_messages()), within=15
        )
