"""Redis Cluster: the final write's riders that live on other nodes, sent with later writes or once a second.

A turn's final write goes to its conversation's node. What rides along (the console's daily aggregates and
search index, a user's conversation index, the stored-bytes and token counts) is keyed elsewhere: on a
cluster each of those nodes costs one more round trip per turn. :class:`SlotSplit` keeps a rider on the write
when its key shares the conversation's slot, and hands the others to :class:`DeferredWrites`. Each later
final write takes along what waits for its own node (:meth:`DeferredWrites.take_for`: no round trip of its
own); whatever is still waiting after ``every`` seconds goes in one cluster pipeline (one round trip per node
touched, however many turns), and so does the rest when the runtime closes.

What becomes late, by at most ``every`` seconds (plus a pipeline): the console's counts, charts and search,
``/forget``'s index of a user's conversations (the conversation's own authors set, written with the
messages, still names the user at once), and the quota counters. Nothing is counted twice: commands that
fail are logged and dropped (a lost count beats a doubled one), except a script Redis forgot (a restart),
which is loaded and sent again once with the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from core.ops.recorder import CommandRecorder

log = structlog.get_logger("parley.deferred")

Call = tuple[str, tuple[Any, ...], dict[str, Any]]
RETRY = "\0retry"  # in place of a node: refused once for a forgotten script, sent after loading it


ROOM = 12_000  # bytes of deferred commands a final write takes along (it stays under Redis's 16 KB read)


def _size(call: Call) -> int:
    """About how many bytes ``call`` takes on the wire (RESP: each argument plus ~8 bytes of framing)."""
    name, args, kwargs = call
    words = [name, *args, *kwargs]
    for value in kwargs.values():
        words.extend(value.items() if isinstance(value, dict) else [value])
    return sum(len(str(w)) + 8 for w in words) + 8


def _key(name: str, args: tuple[Any, ...]) -> Any:
    """The key a command is routed by: a script's first key, else the first argument."""
    return args[2] if name in ("evalsha", "eval") and int(args[1]) > 0 else args[0]


class DeferredWrites:
    def __init__(self, client: Any, *, every: float = 1.0, scripts: Iterable[str] = ()) -> None:
        self._r = client
        self.every = every
        self._waiting: list[tuple[Call, str]] = []  # (command, the node its key lived on when added)
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._scripts = {hashlib.sha1(b.encode()).hexdigest(): b for b in scripts}  # noqa: S324 - Redis's id
        self._listeners: dict[str, Callable[[tuple[Any, ...], Any], None]] = {}

    def listen(self, sha: str, listener: Callable[[tuple[Any, ...], Any], None]) -> None:
        """Tell ``listener(args, result)`` what each EVALSHA of ``sha`` returned once sent (admission learns
        the stored-bytes totals from its counts: core/safety/views.py)."""
        self._listeners[sha] = listener

    def __len__(self) -> int:
        return len(self._waiting)

    def node_of(self, key: Any) -> str:
        """The name of the node serving ``key`` ("" when unknown: such commands wait for the flush)."""
        try:
            node = self._r.get_node_from_key(key)
        except (RedisError, RedisClusterException):  # a slot not covered (a failover): the flush routes it
            return ""
        return str(node.name) if node is not None else ""

    def add(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._waiting.append(((name, args, kwargs), self.node_of(_key(name, args))))
        if self._timer is None and self._flushing is None:
            self._timer = asyncio.get_running_loop().call_later(self.every, self._due)

    def take_for(self, node: str, room: int = ROOM) -> list[Call]:
        """What waits for ``node``, oldest first, up to about ``room`` bytes, for a pipeline going there
        anyway (the caller hands the results to :meth:`settle`). Bounded: Redis reads a request 16 KB at a
        time, so a bigger pipeline costs the server more reads. A command whose slot moved meanwhile is
        redirected as any other."""
        if not node or room <= 0 or not any(n == node for _, n in self._waiting):
            return []
        mine: list[Call] = []
        rest: list[tuple[Call, str]] = []
        for call, n in self._waiting:
            if n == node and room > 0:
                room -= _size(call)
                if room >= 0:
                    mine.append(call)
                    continue
            rest.append((call, n))
        self._waiting = rest
        return mine

    def settle(self, calls: Sequence[Call], results: Sequence[Any], *, retried: bool = False) -> None:
        """Results of sent commands: listeners told, a forgotten script's commands kept for the flush (it
        loads the script; once), other failures logged."""
        failed = 0
        for call, result in zip(calls, results, strict=True):
            name, args, _ = call
            if isinstance(result, NoScriptError) and not retried and str(args[0]) in self._scripts:
                self._waiting.append((call, RETRY))
            elif isinstance(result, Exception):
                failed += 1
            elif name == "evalsha" and (listener := self._listeners.get(str(args[0]))) is not None:
                listener(args, result)
        if failed:
            log.warning("deferred_writes_failed", commands=failed)

    def _due(self) -> None:
        self._timer = None
        self._flushing = asyncio.ensure_future(self._flush_then_rearm())

    async def _flush_then_rearm(self) -> None:
        try:
            await self.flush()
        finally:
            self._flushing = None
            if self._waiting and self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.every, self._due)

    async def flush(self) -> None:
        """Send what waits: one pipeline, one round trip per node."""
        waiting, self._waiting = self._waiting, []
        for retried in (False, True):  # commands Redis refused for a forgotten script go after a load
            batch = CommandRecorder()
            batch.calls = [call for call, node in waiting if (node == RETRY) is retried]
            if not batch.calls:
                continue
            try:
                if retried:
                    for sha in {str(args[0]) for _, args, _ in batch.calls}:
                        await self._r.script_load(self._scripts[sha])
                results = await batch.execute(self._r, raise_on_error=False)
            except (RedisError, OSError) as exc:
                log.warning("deferred_writes_failed", commands=len(batch), error=type(exc).__name__)
                continue
            self.settle(batch.calls, results, retried=retried)

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
            if self._keyslot(_key(name, args)) == self._slot:
                getattr(self._pipe, name)(*args, **kwargs)
            else:
                self._later.add(name, args, kwargs)

        return queue
