"""A real Redis Cluster (3 masters + 3 replicas, one per test session): the queue, memory, limits, pacing,
the branching story's store and the knowledge index on it; round trips per queued turn; a master killed
while turns flow."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import ConnectionError as RedisConnectionError

from bots.loader import load_bot
from core.console.places import encode_place
from core.console.search import SearchIndex
from core.kb.retrieve import KnowledgeBase
from core.kb.store import KbStore
from core.keys import KeySpace
from core.ops.delivery import DispatchOutcome
from core.ops.lock import WORKER
from core.ops.queue import TurnQueue
from core.ops.redisconn import connect
from core.runtime import Runtime, open_runtime
from core.story import StoryState, StoryStore
from core.types import Author, ReplyKind, Turn
from tests.conftest import make_app, make_settings, without_limits
from tests.fakes.openai_server import FakeOpenAI
from tests.kb.conftest import kb_cfg, run_ingest, write_pages
from tests.scale.helpers import FAST, MemoryDelivery, running_worker, scale_spec, turn
from tests.scale.topology import Cluster

# One cluster per run: make test's workers (pytest-xdist --dist loadgroup) keep these tests together.
pytestmark = pytest.mark.xdist_group("redis-cluster")


def _settings(cluster: Cluster, llm: FakeOpenAI, tmp_path: Path, **more: object) -> object:
    return make_settings(
        redis_url=cluster.url,
        openai_base_url=llm.base_url,
        openai_api_key="k",
        parley_data_dir=tmp_path / "d",
        **{**FAST, **more},
    )


async def test_queue_memory_limits_and_pacing_serve_turns_on_a_cluster(
    cluster: Cluster, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    delivery = MemoryDelivery()
    # arcade as shipped: rate windows, token quotas and generation slots run their scripts on the cluster;
    # pacing (on by default) keeps its shared budget there.
    async with open_runtime(load_bot("arcade"), make_app(_settings(cluster, fake_openai, tmp_path))) as rt:  # type: ignore[arg-type]
        rt.ops.deliveries.register("test", delivery)
        async with running_worker(rt):
            for i in range(3):
                for text in ("hello", "again"):
                    outcome = await rt.dispatcher.dispatch(
                        turn(text, thread=f"t{i}", user=f"u{i}", event_id=f"ev-{i}-{text}")
                    )
                    assert outcome.outcome is DispatchOutcome.QUEUED
            again = await rt.dispatcher.dispatch(turn("hello", thread="t0", user="u0", event_id="ev-0-hello"))
            assert again.outcome is DispatchOutcome.DUPLICATE
            await delivery.wait_for(6)
        # Every answered signal was acknowledged (the XACKs ride on later reads, the rest went at shutdown).
        assert rt.ops.queue is not None
        pending = await rt.ops.client.xpending(rt.ops.queue.stream, "workers")
        assert pending["pending"] == 0, pending
        for i in range(3):
            state = await rt.engine.memory.load(turn("x", thread=f"t{i}").place, tail=10)
            assert [m.text for m in state.messages] == [
                "hello",
                "You said: hello",
                "again",
                "You said: again",
            ]
        assert await rt.ops.client.keys("*limit:*")  # the limits wrote on the cluster
    # The conversations are spread over the masters (their {hash tags} differ), each one's keys in one slot.
    places = [turn("x", thread=f"t{i}").place for i in range(3)]
    owners = {cluster.master_of(KeySpace("arcade").conversation(p) + ":msgs").port for p in places}
    assert owners


async def test_story_store_and_knowledge_index_on_a_cluster(cluster: Cluster, tmp_path: Path) -> None:
    async with connect(cluster.url) as connection:
        client = connection.client
        keys = KeySpace("arcade")
        store = StoryStore(client, keys, ttl_seconds=60)
        place = turn("x", thread="story").place
        deadline = int(time.time() * 1000) - 1  # already due
        await store.save(place, StoryState(1, ["Once"], ["left", "right"], deadline, "job", True))
        assert await store.vote(place, 1, "ada", 2) == -2  # the window is closed
        await store.save(place, StoryState(2, ["Once"], ["up", "down"], deadline + 60_000, "job", True))
        assert await store.vote(place, 2, "ada", 2) == 1
        assert await store.vote(place, 2, "bob", 2) == 2
        assert await store.tally(place, 2) == (2, 2)
        claimed = await store.claim_due(lambda platform: True)
        assert claimed == [(place, 1)]
        loaded = await store.load(place)
        assert loaded is not None and loaded.round == 2
        await store.end(place, loaded)
        assert await store.load(place) is None

        bot_dir = tmp_path / "bot"
        write_pages(bot_dir / "kb")
        report = await run_ingest(client, bot_dir, bot="arcade")
        assert report.version == 1
        async with KnowledgeBase(kb_cfg(), KbStore(client, keys)) as kb:
            found = await kb.retrieve("How long does express delivery take?")
            assert "1 to 2 working days" in found.prompt_block()


async def test_a_master_killed_while_turns_flow_loses_none_and_answers_none_twice(
    cluster: Cluster, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    delivery = MemoryDelivery()
    # The lease must outlast the failover (node timeout 1 s + election, several seconds on a busy machine: a
    # 4 s lease ran out and two turns were answered twice): the production timings. No worker dies here, so
    # nothing waits for a claim.
    lease = {"parley_lock_lease": 10.0, "parley_lease_heartbeat": 1.0, "parley_queue_claim_idle": 10.0}
    settings = _settings(cluster, fake_openai, tmp_path, **lease)
    async with open_runtime(scale_spec(), make_app(settings)) as rt:  # type: ignore[arg-type]
        rt.ops.deliveries.register("test", delivery)
        async with running_worker(rt):
            stream_master = cluster.master_of(rt.ops.queue.stream if rt.ops.queue else "")
            sent = 0

            async def send(n: int) -> None:
                nonlocal sent
                for _ in range(n):
                    text = f"m{sent}"
                    while True:
                        outcome = await rt.dispatcher.dispatch(
                            turn(text, thread=f"t{sent % 4}", event_id=f"ev-{text}")
                        )
                        if outcome.outcome is not DispatchOutcome.BUSY:
                            break  # queued, or answered here (FALLBACK) while the queue's master was gone
                        await asyncio.sleep(0.05)
                    sent += 1

            await send(8)
            await asyncio.to_thread(stream_master.kill)  # the queue's own master: the worst case
            await send(8)
            await delivery.wait_for(16, within=30)
            await asyncio.sleep(0.5)  # a duplicate would show up by now
    texts = [d.text for d in delivery.delivered]
    assert sorted(texts) == sorted(f"You said: m{i}" for i in range(16))
    assert len(texts) == len(set(texts)), texts


async def test_a_user_blocked_between_two_queued_turns_is_ignored_on_a_cluster(
    cluster: Cluster, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """The cluster worker judges the blocked set from a cache kept under a version read with each
    XREADGROUP: /safety block must bump it, or the cached (empty) set would let the user through."""
    delivery = MemoryDelivery()
    async with open_runtime(scale_spec(), make_app(_settings(cluster, fake_openai, tmp_path))) as rt:  # type: ignore[arg-type]
        rt.ops.deliveries.register("test", delivery)
        async with running_worker(rt):
            await rt.dispatcher.dispatch(turn("first", thread="blk", user="u-blk", event_id="ev-blk-1"))
            await delivery.wait_for(1)  # the workspace's blocked set is now cached (empty)
            admin = Turn(
                author=Author("boss", "Boss", is_admin=True),
                place=turn("x", thread="blk-admin").place,
                text="/safety block u-blk",
            )
            result = await rt.engine.collect(admin)
            assert result.text.startswith("Blocked u-blk"), result.text
            await rt.dispatcher.dispatch(turn("second", thread="blk", user="u-blk", event_id="ev-blk-2"))
            await rt.dispatcher.dispatch(turn("third", thread="blk", user="u-ok", event_id="ev-blk-3"))
            await delivery.wait_for(3)  # the same conversation: "second" was judged before "third"
    texts = [d.text for d in delivery.delivered]
    assert texts[:2] == ["You said: first", ""], texts  # "second": ignored, nothing said
    assert texts[2].endswith("third"), texts


async def test_deferred_riders_keep_the_stored_bytes_budget_and_reach_redis_on_a_cluster(
    cluster: Cluster, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """On a cluster the stored-bytes counts go out with the deferred riders and the budget is judged from
    the totals they return: a user over it is still refused (one turn late at most); what is deferred at
    shutdown is sent before the client closes."""
    spec = without_limits(load_bot("arcade"))
    budgets = {"user_daily_stored_bytes": 3_000, "conversation_daily_stored_bytes": 0}
    limits = spec.config.limits.model_copy(update=budgets)
    spec = dataclasses.replace(spec, config=spec.config.model_copy(update={"limits": limits}))
    keys = KeySpace("arcade")
    async with open_runtime(spec, make_app(_settings(cluster, fake_openai, tmp_path))) as rt:  # type: ignore[arg-type]
        refused, result = None, None
        for i in range(12):  # each turn stores ~1 KB of the user's words plus the reply
            result = await rt.engine.collect(turn(f"{i} {'x' * 900}", thread=f"sb{i}", user="u-sb"))
            if result.kind is ReplyKind.REFUSAL:
                refused = i
                break
            await rt.engine.memory.flush()  # what the once-a-second flush does
        assert refused is not None and refused <= 5, refused
        assert result is not None and result.meta["limit"] == "stored-user"
        other = await rt.engine.collect(turn("hello", thread="sb-last", user="u-last"))
        assert other.kind is ReplyKind.ANSWER
    async with connect(cluster.url) as connection:  # the last turn's riders went out at shutdown
        index = await connection.client.smembers(keys.user_conversations("test", "u-last"))
        assert index == {keys.conversation(turn("x", thread="sb-last").place)}
        # The console's search index (one script over the terms' sets, which share a slot) got there too.
        term = SearchIndex(connection.client, keys, ttl_seconds=60).key("hello")
        member = encode_place(turn("x", thread="sb-last").place)
        assert await connection.client.zscore(term, member) is not None
        assert await connection.client.ttl(term) > 0


class LostReplies:
    """Commands that reach a cluster node and run there, but whose replies the client never reads: what
    redis-py does to commands in flight on healthy nodes when another node fails over (its ``aclose()``
    drops every node's connections). ``lose(match)`` loses the next reply of a command ``match`` picks;
    ``refused`` commands do not reach their node at all (it is down) while it matches them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.matches: list[Callable[[tuple[Any, ...]], bool]] = []
        self.lost: list[tuple[Any, ...]] = []
        self.refused: Callable[[tuple[Any, ...]], bool] = lambda args: False
        node_command, node_pipeline = ClusterNode.execute_command, ClusterNode.execute_pipeline
        owner = self

        async def execute_command(node: ClusterNode, *args: Any, **kwargs: Any) -> Any:
            if owner.refused(args):
                raise RedisConnectionError("Connection refused.")
            result = await node_command(node, *args, **kwargs)
            if owner._take(args):
                raise RedisConnectionError("Connection closed by server.")
            return result

        async def execute_pipeline(node: ClusterNode, commands: list[Any]) -> bool:
            failed = await node_pipeline(node, commands)
            ran = [c for c in commands if not isinstance(c.result, Exception)]  # not NOSCRIPT, say
            if any(owner._take(command.args) for command in ran):
                for command in commands:
                    command.result = RedisConnectionError("Connection closed by server.")
                return True
            return failed

        monkeypatch.setattr(ClusterNode, "execute_command", execute_command)
        monkeypatch.setattr(ClusterNode, "execute_pipeline", execute_pipeline)

    def lose(self, match: Callable[[tuple[Any, ...]], bool]) -> None:
        self.matches.append(match)

    def _take(self, args: tuple[Any, ...]) -> bool:
        for match in self.matches:
            if match(args):
                self.matches.remove(match)
                self.lost.append(args)
                return True
        return False


async def _warm_up(rt: Any, delivery: MemoryDelivery) -> None:
    """One turn answered first: the scripts are loaded (a first EVALSHA meets NOSCRIPT, sent again after
    loading it), so the replies lost next are those of commands that ran."""
    await rt.dispatcher.dispatch(turn("warm", thread="warm-up", event_id="ev-warm"))
    await delivery.wait_for(1)
    delivery.delivered.clear()


def _script(sha: str, key: str) -> Callable[[tuple[Any, ...]], bool]:
    """An EVALSHA of the script ``sha`` whose keys include ``key``."""
    return lambda args: len(args) > 3 and args[0] == "EVALSHA" and args[1] == sha and key in args[3:]


@contextlib.asynccontextmanager
async def _lossy_runtime(
    cluster: Cluster, fake_openai: FakeOpenAI, tmp_path: Path, **settings: object
) -> AsyncIterator[tuple[Runtime, MemoryDelivery, TurnQueue]]:
    """A runtime on the session cluster with the queue on and replies recorded (the lost-reply tests)."""
    delivery = MemoryDelivery()
    app = make_app(_settings(cluster, fake_openai, tmp_path, **settings))  # type: ignore[arg-type]
    async with open_runtime(scale_spec(), app) as rt:
        rt.ops.deliveries.register("test", delivery)
        assert rt.ops.queue is not None
        yield rt, delivery, rt.ops.queue


async def test_a_take_whose_reply_is_lost_in_a_failover_still_answers_the_conversation(
    cluster: Cluster, fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's take of a conversation runs on its node, but the reply is lost (another node failed
    over); the take is sent again with the same token. It must find the lock its first send took, not
    mistake itself for another worker (acknowledging the signal and leaving the turns in the inbox, with
    nobody to answer them: the master-kill test's lost conversation)."""
    lost = LostReplies(monkeypatch)
    async with (
        _lossy_runtime(cluster, fake_openai, tmp_path) as (rt, delivery, queue),
        running_worker(rt),
    ):
        await _warm_up(rt, delivery)
        lost.lose(_script(queue._take.sha, rt.ops.locks.key(turn("x", thread="lost-take").place)))
        for i in range(2):
            outcome = await rt.dispatcher.dispatch(turn(f"m{i}", thread="lost-take", event_id=f"ev-lt-{i}"))
            assert outcome.outcome is DispatchOutcome.QUEUED
        await delivery.wait_for(2)
    assert lost.lost  # the take's reply was lost once
    assert [d.text for d in delivery.delivered] == ["You said: m0", "You said: m1"]


async def test_a_submit_whose_reply_is_lost_in_a_failover_is_queued_once_and_answered(
    cluster: Cluster, fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submit's first script (dedupe + inbox) runs, its reply is lost, the client sends it again: that
    is the same turn, not a duplicate event (a 'duplicate' would skip the signal: no worker would ever
    take the item), and it is pushed once."""
    lost = LostReplies(monkeypatch)
    async with _lossy_runtime(cluster, fake_openai, tmp_path) as (rt, delivery, queue):
        place = turn("x", thread="lost-submit").place
        lost.lose(_script(queue._submit_inbox.sha, queue.inbox(place)))
        outcome = await rt.dispatcher.dispatch(turn("once", thread="lost-submit", event_id="ev-ls-1"))
        assert lost.lost
        assert outcome.outcome is DispatchOutcome.QUEUED
        assert await rt.ops.client.llen(queue.inbox(place)) == 1  # type: ignore[misc]
        again = await rt.dispatcher.dispatch(turn("once", thread="lost-submit", event_id="ev-ls-1"))
        assert again.outcome is DispatchOutcome.DUPLICATE  # the platform's retry of the event still is one
        async with running_worker(rt):
            await delivery.wait_for(1)
            await asyncio.sleep(0.3)  # a second reply would show up by now
    assert [d.text for d in delivery.delivered] == ["You said: once"]


async def test_a_memory_read_whose_reply_is_lost_in_a_failover_is_read_again(
    cluster: Cluster, fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn's memory read (after a take whose reply was lost, the engine reads for itself) loses its
    reply too: the reads are sent again, and the turn is answered, not met with the persona's "memory is
    unavailable" apology (the master-kill test saw that on a healthy node's conversation)."""
    lost = LostReplies(monkeypatch)
    async with _lossy_runtime(cluster, fake_openai, tmp_path) as (rt, delivery, queue):
        place = turn("x", thread="lost-read").place
        messages = KeySpace("arcade").messages(place)
        async with running_worker(rt):
            await _warm_up(rt, delivery)
            lost.lose(_script(queue._take.sha, rt.ops.locks.key(place)))
            lost.lose(lambda args: args[:2] == ("LRANGE", messages))
            await rt.dispatcher.dispatch(turn("remember me", thread="lost-read", event_id="ev-lr-1"))
            await delivery.wait_for(1)
    assert len(lost.lost) == 2  # the take's reply and the memory read's
    assert [d.text for d in delivery.delivered] == ["You said: remember me"]


async def test_a_signed_turn_whose_nonce_claim_loses_its_reply_is_still_answered(
    cluster: Cluster, fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With signing keys (production) a worker claims the item's nonce before running it. That SET's reply
    lost and the SET sent again must not read as a replay of the item (refused: the turn lost)."""
    lost = LostReplies(monkeypatch)
    keys = SecretStr(Fernet.generate_key().decode())
    async with _lossy_runtime(cluster, fake_openai, tmp_path, parley_credentials_keys=keys) as (
        rt,
        delivery,
        queue,
    ):
        assert queue.guard.enabled
        nonces = queue.guard.key("")
        async with running_worker(rt):
            await _warm_up(rt, delivery)
            lost.lose(lambda args: args[0] == "SET" and str(args[1]).startswith(nonces) and "NX" in args)
            await rt.dispatcher.dispatch(turn("signed", thread="lost-nonce", event_id="ev-ln-1"))
            await delivery.wait_for(1)
    assert lost.lost
    assert [d.text for d in delivery.delivered] == ["You said: signed"]


async def test_a_turn_whose_signal_cannot_be_sent_is_taken_back_and_answered_here_once(
    cluster: Cluster, fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream's node stays unreachable past the failover wait after the item was pushed in its
    conversation's slot: the item is taken back out and the turn answered here (the dispatcher's fallback),
    its event still claimed. Not: the fallback finding the event taken (answering nothing) while the item
    waits in the inbox with no signal for the conversation's next turn."""
    lost = LostReplies(monkeypatch)
    async with _lossy_runtime(cluster, fake_openai, tmp_path, parley_redis_failover_wait=0.3) as (
        rt,
        delivery,
        queue,
    ):
        inbox = queue.inbox(turn("x", thread="no-signal").place)
        lost.refused = _script(queue._signal.sha, queue.stream)
        outcome = await rt.dispatcher.dispatch(turn("alone", thread="no-signal", event_id="ev-ns-1"))
        assert outcome.outcome is DispatchOutcome.FALLBACK
        await delivery.wait_for(1)
        lost.refused = lambda args: False  # the stream's node is back
        assert await rt.ops.client.llen(inbox) == 0  # type: ignore[misc]
        again = await rt.dispatcher.dispatch(turn("alone", thread="no-signal", event_id="ev-ns-1"))
        assert again.outcome is DispatchOutcome.DUPLICATE  # the event was answered
        async with running_worker(rt):
            await rt.dispatcher.dispatch(turn("next", thread="no-signal", event_id="ev-ns-2"))
            await delivery.wait_for(2)
            await asyncio.sleep(0.3)  # a second reply to "alone" would show up by now
    assert [d.text for d in delivery.delivered] == ["You said: alone", "You said: next"]


async def test_a_turn_whose_signal_cannot_be_sent_stays_queued_while_a_worker_drains_its_conversation(
    cluster: Cluster, fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but a worker holds the conversation's lock: it drains the whole inbox (it looks again before
    it unlocks), so the item stays and the submit says queued (taking it back would answer it twice)."""
    lost = LostReplies(monkeypatch)
    async with _lossy_runtime(cluster, fake_openai, tmp_path, parley_redis_failover_wait=0.3) as (
        rt,
        _delivery,
        queue,
    ):
        place = turn("x", thread="drained").place
        lease, _holder = await rt.ops.locks.try_acquire(place, WORKER)
        assert lease is not None
        lost.refused = _script(queue._signal.sha, queue.stream)
        outcome = await rt.dispatcher.dispatch(turn("kept", thread="drained", event_id="ev-dr-1"))
        assert outcome.outcome is DispatchOutcome.QUEUED
        assert await rt.ops.client.llen(queue.inbox(place)) == 1  # type: ignore[misc]
