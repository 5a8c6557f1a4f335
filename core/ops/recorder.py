"""A stand-in for a pipeline on Redis Cluster, where redis-py refuses scripts (EVALSHA) in a pipeline.

Code that queues commands on a pipeline (``pipe.evalsha(...)``, ``pipe.zrem(...)``) can queue them on a
:class:`CommandRecorder` instead; :meth:`CommandRecorder.execute` then sends them one by one, each to the
node that owns its key. More round trips, same results, so the rest of the code does not care.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError


class CommandRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., CommandRecorder]:
        if name.startswith("_"):
            raise AttributeError(name)

        def record(*args: Any, **kwargs: Any) -> CommandRecorder:
            self.calls.append((name, args, kwargs))
            return self

        return record

    def __len__(self) -> int:
        return len(self.calls)

    async def execute(self, client: Any, *, raise_on_error: bool = True) -> list[Any]:
        results: list[Any] = []
        for name, args, kwargs in self.calls:
            try:
                results.append(await getattr(client, name)(*args, **kwargs))
            except RedisError as exc:
                if raise_on_error:
                    raise
                results.append(exc)
        return results
