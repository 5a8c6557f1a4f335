"""Session-wide real Redis topologies: one 3 + 3 Redis Cluster and one Sentinel group for every test that
needs them (starting them costs a few seconds; tests that kill a node heal it before they return)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scale.topology import Cluster, SentinelGroup


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster.start(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Cluster:
    """The session's cluster, healed and empty."""
    redis_cluster.heal()
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture(scope="session")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    group = SentinelGroup.start(tmp_path_factory.mktemp("sentinel"))
    try:
        yield group
    finally:
        group.stop()
