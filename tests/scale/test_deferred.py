"""The cluster's deferred riders (core/ops/deferred.py), without Redis: what a final write takes along, and
what happens to the results."""

from __future__ import annotations

from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from core.ops.deferred import Call, DeferredWrites


class Node:
    def __init__(self, name: str) -> None:
        self.name = name


class Client:
    """Keys starting with "a" live on node A, the others on node B."""

    def get_node_from_key(self, key: str) -> Node:
        return Node("A" if key.startswith("a") else "B")


async def test_a_write_takes_the_oldest_commands_for_its_node_within_its_room() -> None:
    later = DeferredWrites(Client(), every=60)
    for i in range(5):
        later.add("hincrby", (f"a{i}", "f", 1), {})
        later.add("hincrby", (f"b{i}", "f", 1), {})
    taken = later.take_for("A", room=160)  # about 50 bytes each on the wire: three fit
    assert [args[0] for _, args, _ in taken] == ["a0", "a1", "a2"]
    assert [args[0] for _, args, _ in later.take_for("A")] == ["a3", "a4"]  # the rest, in order
    assert later.take_for("A") == []
    assert len(later) == 5  # node B's wait for a write there, or the flush
    assert len(later.take_for("B")) == 5


async def test_results_reach_the_listener_and_a_forgotten_script_is_kept_once() -> None:
    later = DeferredWrites(Client(), every=60, scripts=["return 1"])
    sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"  # sha1("return 1")
    heard: list[tuple[Any, Any]] = []
    later.listen(sha, lambda args, result: heard.append((args[2], result)))
    calls: list[Call] = [("evalsha", (sha, 1, "a-quota", 5), {}), ("evalsha", (sha, 1, "b-quota", 5), {})]
    later.settle(calls, [[7, 1000], NoScriptError("NOSCRIPT")])
    assert heard == [("a-quota", [7, 1000])]
    assert len(later) == 1  # sent again after the flush loads the script
    later.settle(calls[1:], [NoScriptError("NOSCRIPT")], retried=True)  # refused again: dropped
    later.settle(calls[:1], [ResponseError("WRONGTYPE")])  # logged, dropped
    assert len(later) == 1 and heard == [("a-quota", [7, 1000])]
