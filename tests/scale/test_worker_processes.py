"""Fault injection with real worker processes on one Redis: SIGKILL mid-turn, SIGTERM with turns in flight."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from core.ops.processes import child_env
from core.runtime import Runtime
from tests.cli import parley
from tests.conftest import RuntimeFactory
from tests.fakes.openai_server import Behaviour, FakeOpenAI, Reply, last_user_text
from tests.scale.helpers import (
    DELIVERED,
    FAST,
    STARTED,
    RedisRecordingDelivery,
    WorkerProcess,
    eventually,
    read_records,
    scale_spec,
    turn,
    worker_env,
)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for proc in started:
        proc.close()


@pytest.mark.slow
async def test_a_killed_worker_leaves_its_turn_to_the_other_once_and_sigterm_hands_slow_turns_back(
    runtime_factory: RuntimeFactory,
    fake_openai: FakeOpenAI,
    redis_url: str,
    redis_client: aioredis.Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    """Two fault cases on the same worker processes (each process costs ~3 s of CPU to start): (1) SIGKILL
    mid-turn: the other worker answers that turn exactly once; (2) SIGTERM on the survivor with six turns in
    flight: it finishes the fast ones within the grace and hands the slow ones back, to a new worker."""
    # The first request streams slowly (several seconds): time to kill the worker that took it.
    fake_openai.queue(Reply("Once upon a time, in a land far away, " * 3, chunk_chars=3, delay=0.1))
    env = worker_env(redis_url, fake_openai.base_url, parley_shutdown_grace=1.0)
    workers += [WorkerProcess(env, tmp_path / "a.log"), WorkerProcess(env, tmp_path / "b.log")]
    for worker in workers:
        await worker.ready()

    async with runtime_factory(spec=scale_spec(), **FAST) as rt:  # the adapter side: enqueue only
        rt.ops.deliveries.register("test", RedisRecordingDelivery(rt.redis))
        await _killed_mid_turn(rt, fake_openai, redis_client, workers)
        # The survivor goes on to case (2), with this case's records cleared (what it delivered is counted).
        survivor = workers[-1] if workers[0].proc.returncode is not None else workers[0]
        await redis_client.delete(STARTED, DELIVERED)
        await _sigterm_in_flight(rt, fake_openai, redis_client, workers, survivor, env, tmp_path)


async def _killed_mid_turn(
    rt: Runtime, fake_openai: FakeOpenAI, redis_client: aioredis.Redis, workers: list[WorkerProcess]
) -> None:
    await rt.dispatcher.dispatch(turn("tell me a story", event_id="Ev1"))

    async def started() -> bool:
        return bool(await read_records(redis_client, STARTED))

    await eventually(started, what="a worker streaming the reply")
    first = (await read_records(redis_client, STARTED))[0]
    victim = next(w for w in workers if w.pid == first["who"])
    survivor = next(w for w in workers if w is not victim)
    victim.signal(signal.SIGKILL)
    assert await victim.wait() == -signal.SIGKILL

    async def delivered() -> bool:
        return bool(await read_records(redis_client))

    await eventually(delivered, within=15, what="the survivor's reply")
    await _settle()
    records = await read_records(redis_client)
    memory = await rt.engine.memory.load(turn("x").place, tail=50)

    assert len(records) == 1, records
    (reply,) = records
    assert reply["who"] == survivor.pid
    assert reply["attempt"] == 2  # claimed from the dead worker
    assert reply["text"] == "You said: tell me a story"
    assert [(m.role, m.text) for m in memory.messages] == [
        ("user", "tell me a story"),
        ("assistant", "You said: tell me a story"),
    ]
    assert len(fake_openai.chat_requests) == 2  # the dead worker's call, and the survivor's


async def _sigterm_in_flight(
    rt: Runtime,
    fake_openai: FakeOpenAI,
    redis_client: aioredis.Redis,
    workers: list[WorkerProcess],
    first: WorkerProcess,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    seen: set[str] = set()

    def respond(body: dict[str, Any]) -> Behaviour:
        text = last_user_text(body)
        if text.startswith("slow") and text not in seen:  # the first try outlasts the shutdown grace
            seen.add(text)
            return Reply(f"You said: {text}", chunk_chars=1, delay=0.25)
        return Reply(f"You said: {text}", chunk_chars=3, delay=0.1)  # ~0.6 s: within the 1 s grace

    fake_openai.responder = respond
    texts = [f"slow {i}" for i in range(3)] + [f"fast {i}" for i in range(3)]
    for i, text in enumerate(texts):  # threads of their own (case 1 used t1)
        await rt.dispatcher.dispatch(turn(text, thread=f"s{i}"))

    async def all_started() -> bool:
        return len(await read_records(redis_client, STARTED)) >= len(texts)

    await eventually(all_started, what="six turns in flight")
    first.signal(signal.SIGTERM)
    assert await first.wait() == 0, first.output()
    # Stopped at the grace, not after the slow replies: those were handed back, not answered here (a
    # timed assertion would say the same less reliably on a busy machine).
    by_first = await read_records(redis_client)
    assert sorted(r["text"] for r in by_first) == [f"You said: fast {i}" for i in range(3)]
    assert "worker_handed_back" in first.output()

    second = WorkerProcess(env, tmp_path / "second.log")
    workers.append(second)

    async def all_answered() -> bool:
        return len(await read_records(redis_client)) >= len(texts)

    await eventually(all_answered, within=20, what="the handed-back turns answered")
    await _settle()
    records = await read_records(redis_client)
    locks = [k async for k in redis_client.scan_iter("parley:arcade:*:lock")]
    inboxes = [k async for k in redis_client.scan_iter("parley:arcade:*:inbox")]
    assert sorted(r["text"] for r in records) == sorted(f"You said: {t}" for t in texts)
    assert len({r["turn_id"] for r in records}) == len(texts)  # none twice
    assert {r["who"] for r in records if "slow" in r["text"]} == {second.pid}
    assert inboxes == []
    assert locks == []
    second.signal(signal.SIGTERM)
    assert await second.wait() == 0


@pytest.mark.slow
async def test_parley_run_workers_only_serves_health_and_exits_cleanly_on_sigterm(
    redis_url: str, fake_openai: FakeOpenAI, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # arcade's Discord Delivery needs a token (it logs in on first use only: nothing is sent here).
    env = worker_env(
        redis_url,
        fake_openai.base_url,
        port=port,
        parley_ops_port=port,  # PARLEY_OPS_PORT = PORT: one server for everything (the opt-in)
        discord_token="test-token",
        discord_api_url="http://127.0.0.1:9/api",
    )
    proc = WorkerProcess(
        env, tmp_path / "cli.log", argv=["-m", "bots", "run", "--bot", "arcade", "--workers-only"]
    )
    workers.append(proc)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:

        async def healthy() -> bool:
            assert proc.proc.poll() is None, f"parley run exited early:\n{proc.output()}"
            try:
                async with http.get(f"{base}/healthz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await proc.ready(within=30)  # a loaded machine can take a while to import everything
        await eventually(healthy, within=10, what=f"/healthz; output:\n{proc.output()}")
        async with http.get(f"{base}/readyz") as response:
            body = json.loads(await response.text())
            assert response.status == 200, body
            assert {"redis", "llm"} <= set(body["checks"])
        async with http.get(f"{base}/metrics") as response:
            assert "parley_llm_circuit_state" in await response.text()
    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0, proc.output()
    assert '"shut_down"' in proc.output()


async def _settle() -> None:
    """Give a wrong second reply time to appear before counting."""
    await asyncio.sleep(1.0)


def _logged(output: str, event: str) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in output.splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == event]


@pytest.mark.slow
async def test_parley_run_starts_supervises_and_stops_its_worker_processes(
    redis_url: str, fake_openai: FakeOpenAI, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    env = worker_env(
        redis_url,
        fake_openai.base_url,
        parley_ops_port=0,
        parley_worker_processes=3,
        discord_token="test-token",
        discord_api_url="http://127.0.0.1:9/api",
    )
    argv = ["-m", "bots", "run", "--bot", "arcade", "--workers-only"]
    proc = WorkerProcess(env, tmp_path / "cli.log", argv=argv)  # the children log to the same file
    workers.append(proc)

    def log_of(event: str) -> list[dict[str, Any]]:
        return _logged(proc.log_path.read_text(errors="replace"), event)

    async def serving() -> bool:
        assert proc.proc.poll() is None, f"parley run exited early:\n{proc.output()}"
        return len(log_of("worker_started")) >= 3

    await eventually(serving, within=40, what="3 workers started")  # this process and its 2 children
    first = {line["index"]: line["pid"] for line in log_of("worker_process_started")}
    assert sorted(first) == [1, 2]
    victim = first[1]
    os.kill(victim, signal.SIGKILL)

    async def restarted() -> bool:
        return len(log_of("worker_process_started")) == 3 and len(log_of("worker_started")) == 4

    await eventually(restarted, within=40, what="the killed worker process started again")
    (exited,) = log_of("worker_process_exited")
    assert (exited["index"], exited["pid"], exited["code"]) == (1, victim, -signal.SIGKILL)
    children = [line["pid"] for line in log_of("worker_process_started")[-2:]]

    proc.signal(signal.SIGTERM)  # forwarded: every process shuts down, within the same bound
    assert await proc.wait(within=15) == 0, proc.output()
    assert sorted(line["pid"] for line in log_of("worker_process_stopped")) == sorted(children)
    assert not log_of("worker_process_killed")
    assert len(log_of("shut_down")) == 3
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_worker_processes_get_their_own_ports_and_no_children() -> None:
    env = child_env({"PARLEY_WORKER_PROCESSES": "4", "PORT": "3000", "KEEP": "x"}, 2, ops_port=9090)
    assert env == {"PARLEY_WORKER_PROCESSES": "1", "PORT": "0", "PARLEY_OPS_PORT": "9092", "KEEP": "x"}
    assert child_env({}, 1, ops_port=0)["PARLEY_OPS_PORT"] == "0"


async def test_worker_processes_need_the_queue(tmp_path: Path) -> None:
    # In this process (tests/cli.py): the refusal comes before anything is opened or started, so a
    # process of its own (~3 s of CPU to import the engine) would add nothing.
    env = worker_env("redis://127.0.0.1:9", "http://127.0.0.1:9/v1", parley_worker_processes=2)
    env["PARLEY_QUEUE"] = "false"
    code, _, err = await parley("run", "--bot", "arcade", env=env, cwd=tmp_path)
    assert code == 2, err
    assert "PARLEY_WORKER_PROCESSES > 1 needs the turn queue" in err
