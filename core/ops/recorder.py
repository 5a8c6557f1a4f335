"""A stand-in for a pipeline on Redis Cluster, where redis-py refuses ``pipe.evalsha(...)`` in a pipeline.

Code that queues commands on a pipeline (``pipe.evalsha(...)``, ``pipe.zrem(...)``) can queue them on a
:class:`CommandRecorder` instead; :meth:`CommandRecorder.execute` then sends them in one cluster pipeline,
scripts as raw ``EVALSHA`` commands (which redis-py routes by their first key like any other): one round trip
per node touched, same results, so the rest of the code does not care. :class:`ScriptingPipe` does the same
on a live cluster pipeline.
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
        if not self.calls:
            return []
        async with client.pipeline(transaction=False) as pipe:
            target = ScriptingPipe(pipe)
            for name, args, kwargs in self.calls:
                getattr(target, name)(*args, **kwargs)
            results: list[Any] = list(await pipe.execute(raise_on_error=False))
        if raise_on_error:
            failed = next((r for r in results if isinstance(r, RedisError)), None)
            if failed is not None:
                raise failed
        return results


class ScriptingPipe:
    """A cluster pipeline that takes ``evalsha``/``eval`` too (sent as raw commands)."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def __getattr__(self, name: str) -> Any:
        if name in ("evalsha", "eval"):
            command = name.upper()

            def script(*args: Any) -> Any:
                return self._pipe.execute_command(command, *args)

            return script
        return getattr(self._pipe, name)

    def __len__(self) -> int:
        return len(self._pipe)
