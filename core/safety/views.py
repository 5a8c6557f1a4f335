"""Redis Cluster: what admission knows without a round trip of its own per turn.

On one node admission's checks ride on the turn's memory read. On a cluster the blocked-users set and the
stored-bytes counters live on other nodes than the conversation: one more round trip per node, per turn.

- :class:`BlockedView`: each workspace's blocked set, cached with the value of one version key that
  ``/safety block`` and ``unblock`` bump after changing a set. The key lives in the queue stream's slot, so
  the worker reads it with every XREADGROUP (same node, same pipeline). A cached set is used only while the
  version was read in the last :data:`FRESH` second and equals the one it was read under; otherwise the
  check asks Redis as before. A block is therefore seen by every queued turn whose signal was read after it.
- :class:`QuotaView`: the stored-bytes budgets (a coarse guard against filling memory, 1-2 MB a day) are
  judged from the counters' totals as the deferred writes (core/ops/deferred.py) last returned them. A user
  or conversation this process has not counted since its start (or since the window reset) is admitted, and
  its first count teaches the total: a budget may be overshot by a turn per process plus what a process
  stores between two flushes (1 s). Token quotas and rate limits are not judged here: they stay exact.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from core.safety.limits import LimitCheck, LimitOutcome

FRESH = 1.0  # seconds a version read stays good for the blocked sets cached under it
MAX_ENTRIES = 50_000  # counters remembered (least recently used go first)


class BlockedView:
    def __init__(self) -> None:
        self._version: str | None = None
        self._read_at = 0.0
        self._sets: OrderedDict[str, tuple[str, frozenset[str]]] = OrderedDict()

    def seen(self, version: str | None) -> None:
        """The version key's value, as just read (None when missing: nobody was ever blocked)."""
        self._version = version or "0"
        self._read_at = time.monotonic()

    @property
    def version(self) -> str | None:
        """The current version if read in the last :data:`FRESH` second, else None."""
        if self._version is None or time.monotonic() - self._read_at > FRESH:
            return None
        return self._version

    def blocked(self, key: str, user: str) -> bool | None:
        """Whether ``user`` is in the set ``key`` (None: not known for the current version: ask Redis)."""
        version = self.version
        cached = self._sets.get(key)
        if version is None or cached is None or cached[0] != version:
            return None
        self._sets.move_to_end(key)
        return user in cached[1]

    def store(self, key: str, version: str, members: frozenset[str]) -> None:
        self._sets[key] = (version, members)
        self._sets.move_to_end(key)
        while len(self._sets) > MAX_ENTRIES // 10:
            self._sets.popitem(last=False)


class QuotaView:
    def __init__(self) -> None:
        self._totals: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key -> (used, resets at)

    @staticmethod
    def judged_here(check: LimitCheck) -> bool:
        return check.kind == "quota" and check.scope.startswith("stored-")

    def learn(self, args: tuple[Any, ...], result: Any) -> None:
        """A quota script's result ``{used, ms until the reset}`` for the counter ``args[2]`` (EVALSHA sha
        1 key ...), from a deferred flush."""
        try:
            used, ttl = int(result[0]), int(result[1])
        except (TypeError, ValueError, IndexError):
            return
        key = str(args[2])
        self._totals[key] = (used, time.monotonic() + ttl / 1000)
        self._totals.move_to_end(key)
        while len(self._totals) > MAX_ENTRIES:
            self._totals.popitem(last=False)

    def outcome(self, check: LimitCheck) -> LimitOutcome:
        known = self._totals.get(check.key)
        now = time.monotonic()
        if known is None or known[1] <= now:
            return LimitOutcome(check, True)
        used = known[0]
        if used < check.limit:
            return LimitOutcome(check, True, used=used)
        return LimitOutcome(check, False, int((known[1] - now) * 1000), used)
