"""Redis Sentinel for real (one master, one replica, three sentinels; one group per test session):
REDIS_SENTINELS / REDIS_SENTINEL_MASTER settings, and the master killed while turns flow."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.ops.delivery import DispatchOutcome
from core.runtime import open_runtime
from core.settings import load_settings
from tests.conftest import make_app, make_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.scale.helpers import FAST, MemoryDelivery, running_worker, scale_spec, turn
from tests.scale.topology import SentinelGroup

# One Sentinel group per run: make test's workers (pytest-xdist --dist loadgroup) keep these together.
pytestmark = pytest.mark.xdist_group("redis-sentinel")


def test_sentinel_settings_need_each_other_and_exclude_redis_url() -> None:
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_MASTER"):
        load_settings(_env_file=None, redis_sentinels="127.0.0.1:26379")
    with pytest.raises(ConfigError, match="not both"):
        load_settings(_env_file=None, redis_sentinels="h:1", redis_sentinel_master="m", redis_url="redis://h")
    with pytest.raises(ConfigError, match="needs REDIS_SENTINELS"):
        load_settings(_env_file=None, redis_sentinel_master="m")


async def test_the_master_killed_while_turns_flow_loses_none_and_answers_none_twice(
    sentinel_group: SentinelGroup, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    group = sentinel_group
    with group.master.client() as direct:
        direct.flushall()
    settings = make_settings(
        redis_sentinels=group.sentinel_hosts,
        redis_sentinel_master=group.name,
        openai_base_url=fake_openai.base_url,
        openai_api_key="k",
        parley_data_dir=tmp_path / "d",
        # The lease outlasts the failover (down-after 600 ms + the election, longer on a busy machine): turns
        # keep their conversation. No worker dies here, so nothing waits for a claim.
        **{**FAST, "parley_lock_lease": 10.0, "parley_lease_heartbeat": 1.0, "parley_queue_claim_idle": 10.0},
    )
    delivery = MemoryDelivery()
    old_master = group.master
    try:
        async with open_runtime(scale_spec(), make_app(settings)) as rt:
            rt.ops.deliveries.register("test", delivery)
            async with running_worker(rt):

                async def send(first: int, count: int) -> None:
                    for i in range(first, first + count):
                        outcome = await rt.dispatcher.dispatch(
                            turn(f"m{i}", thread=f"t{i % 3}", event_id=f"ev-m{i}")
                        )
                        assert outcome.outcome is not DispatchOutcome.BUSY

                await send(0, 6)
                await asyncio.to_thread(old_master.kill)
                await send(6, 6)
                await delivery.wait_for(12, within=30)
                await asyncio.sleep(0.5)  # a duplicate would show up by now
        assert group.current_master_port() == group.replica.port  # the replica was promoted
        texts = [d.text for d in delivery.delivered]
        assert sorted(texts) == sorted(f"You said: m{i}" for i in range(12))
        assert len(texts) == len(set(texts)), texts
    finally:
        await asyncio.to_thread(group.heal)
