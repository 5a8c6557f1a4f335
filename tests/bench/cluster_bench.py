"""Round trips per queued turn on a real Redis Cluster (3 masters + 3 replicas on loopback), counted by the
servers: ``total_reads_processed`` summed over the masters, idle reads subtracted (as ``make bench`` does on
one node), and ``INFO commandstats`` summed over them for the commands behind.

    python -m tests.bench.cluster_bench [--turns 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from bots.loader import load_bot
from core.runtime import open_runtime
from core.settings import Settings
from tests.bench.core_bench import ServerCounter, ZeroLLM, queued_path
from tests.conftest import make_app, without_limits
from tests.scale.topology import Cluster


class ClusterCounter(ServerCounter):
    """The same counting, summed over the cluster's masters."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    async def snapshot(self) -> tuple[int, dict[str, int]]:
        return await asyncio.to_thread(self._snapshot)

    def _snapshot(self) -> tuple[int, dict[str, int]]:
        reads, calls = 0, {}
        for node in self._cluster.masters():
            with node.client() as client:
                reads += int(client.info("stats")["total_reads_processed"]) - 2  # less our own two INFOs
                for name, value in client.info("commandstats").items():
                    key = name.removeprefix("cmdstat_")
                    calls[key] = calls.get(key, 0) + int(value["calls"])
        return reads + 2, calls  # ServerCounter subtracts 2 per snapshot itself


async def run(turns: int) -> dict[str, Any]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="parley-cluster-bench-") as tmp:
        cluster = await asyncio.to_thread(Cluster.start, Path(tmp) / "cluster")
        try:
            spec = without_limits(load_bot("arcade"))
            memory = spec.config.memory.model_copy(update={"fold_after": 10**9})
            spec = replace(spec, config=spec.config.model_copy(update={"memory": memory}))
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None, openai_model="bench", parley_data_dir=Path(tmp), redis_url=cluster.url
            )
            async with open_runtime(spec, make_app(settings), llm=ZeroLLM()) as rt:
                return await queued_path(rt, ClusterCounter(cluster), turns)
        finally:
            await asyncio.to_thread(cluster.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    result = asyncio.run(run(args.turns))
    print(
        f"Redis Cluster (3+3), queued path: {result['round_trips']:.2f} round trips per turn (server-counted)"
    )
    print(json.dumps(result["by_command"], indent=1))


if __name__ == "__main__":
    main()
