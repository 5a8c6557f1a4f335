"""Redis Cluster: the final write's riders that live on other nodes, sent together once a second.

A turn's final write goes to its conversation's node. What rides along (the console's daily aggregates and
search index, a user's conversation index, the stored-bytes and token counts) is keyed elsewhere: on a
cluster each of those nodes costs one more round trip per turn. :class:`SlotSplit` keeps a rider on the write
when its key shares the conversation's slot, and hands the others to :class:`DeferredWrites`, which sends
everything gathered in one cluster pipeline every ``every`` seconds (one round trip per node touched, however
many turns), and once more when it closes.

What becomes late, by at most ``every`` seconds (plus a pipeline): the console's counts, charts and search,
``/forget``'s index of a user's conversations (the conversation's own authors set, written with the
messages, still names the user at once), and the quota counters. Nothing is counted twice: a flush that
fails is logged and dropped (a lost count beats a doubled one), except a script Redis forgot (a restart),
which is loaded and sent again once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from redis.exceptions import NoScriptError, RedisError

from core.ops.recorder import CommandRecorder

log = structlog.get_logger("parley.deferred")


class DeferredWrites:
    def __init__(self, client: Any, *, every: float = 1.0, scripts: Iterable[str] = ()) -> None:
        self._r = client
        self.every = every
        self._batch = CommandRecorder()
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._scripts = {hashlib.sha1(b.encode()).hexdigest(): b for b in scripts}  # noqa: S324 - Redis's id
        self._listeners: dict[str, Callable[[tuple[Any, ...], Any], None]] = {}

    def listen(self, sha: str, listener: Callable[[tuple[Any, ...], Any], None]) -> None:
        """Tell ``listener(args, result)`` what each flushed EVALSHA of ``sha`` returned (admission learns
        the stored-bytes totals from its counts: core/safety/views.py)."""
        self._listeners[sha] = listener

    def __len__(self) -> int:
        return len(self._batch)

    def add(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._batch.calls.append((name, args, kwargs))
        if self._timer is None and self._flushing is None:
            self._timer = asyncio.get_running_loop().call_later(self.every, self._due)

    def _due(self) -> None:
        self._timer = None
        self._flushing = asyncio.ensure_future(self._flush_then_rearm())

    async def _flush_then_rearm(self) -> None:
        try:
            await self.flush()
        finally:
            self._flushing = None
            if len(self._batch) and self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.every, self._due)

    async def flush(self) -> None:
        """Send what was gathered: one pipeline, one round trip per node."""
        batch, self._batch = self._batch, CommandRecorder()
        if not batch.calls:
            return
        try:
            results = await batch.execute(self._r, raise_on_error=False)
            again = CommandRecorder()
            again.calls = [
                call
                for call, result in zip(batch.calls, results, strict=True)
                if isinstance(result, NoScriptError) and str(call[1][0]) in self._scripts
            ]
            calls = batch.calls
            if again.calls:  # Redis restarted and forgot the scripts: load them, send those once more
                for sha in {str(call[1][0]) for call in again.calls}:
                    await self._r.script_load(self._scripts[sha])
                kept = [
                    (c, r) for c, r in zip(calls, results, strict=True) if not isinstance(r, NoScriptError)
                ]
                calls = [c for c, _ in kept] + again.calls
                results = [r for _, r in kept] + await again.execute(self._r, raise_on_error=False)
        except (RedisError, OSError) as exc:
            log.warning("deferred_writes_failed", commands=len(batch), error=type(exc).__name__)
            return
        if self._listeners:
            for (name, args, _), result in zip(calls, results, strict=True):
                listener = self._listeners.get(str(args[0])) if name == "evalsha" else None
                if listener is not None and not isinstance(result, Exception):
                    listener(args, result)
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            log.warning("deferred_writes_failed", commands=len(failed), error=type(failed[0]).__name__)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._flushing
        await self.flush()


class SlotSplit:
    """A pipeline stand-in for riders: a command whose key (a script's first key) shares ``slot`` goes on
    ``pipe`` (the conversation's write), any other to ``later``, except through :attr:`now`, which puts it
    on ``pipe`` wherever it lives (a generation slot's release must not wait)."""

    def __init__(self, pipe: Any, slot: int, keyslot: Callable[[Any], int], later: DeferredWrites) -> None:
        self._pipe = pipe
        self._slot = slot
        self._keyslot = keyslot
        self._later = later
        self.now = pipe

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):
            raise AttributeError(name)

        def queue(*args: Any, **kwargs: Any) -> None:
            key = args[2] if name in ("evalsha", "eval") and int(args[1]) > 0 else args[0]
            if self._keyslot(key) == self._slot:
                getattr(self._pipe, name)(*args, **kwargs)
            else:
                self._later.add(name, args, kwargs)

        return queue
