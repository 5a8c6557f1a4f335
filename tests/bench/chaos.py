"""``make chaos``: a scripted fault table on real processes, loopback only.

Each row starts two queue-worker processes (``tests/scale/worker_main.py``, the code path of ``parley run
--workers-only``) with the production lease timings (lease 10 s, heartbeats every 3 s, claim after 10 s),
sends turns from an adapter-side runtime in this process at a steady pace, injects one fault while they flow,
and counts from the replies the processes wrote to a file (Redis itself may be down): turns sent, answered
(a real answer), apologies (the persona's error text: not lost, not answered), duplicates, lost, and the
longest delay from dispatch to the final reply. Target: 0 lost and 0 duplicates in every row.

The ``embeddings-down`` row runs the support bot (knowledge base ingested with an OpenAI-compatible
embeddings endpoint, so retrieval is hybrid) and stops that endpoint: turns are still answered, lexical-only
through the knowledge base's breaker; the note under the table counts the retrieval modes the workers logged.

A second table: ``parley run`` SIGTERMed with a reply streaming while one dependency is gone (Redis, Discord,
both, the LLM, Slack), with the default grace of 7 s: seconds to the process's exit and to its ``shut_down``
record, and whether the unanswered turn went back to the queue (tests/scale/shutdown_cases.py).

    make chaos                      # every row
    python -m tests.bench.chaos --rows replica-sigkill,redis-restart
    python -m tests.bench.chaos --rows embeddings-down --shutdown slack,redis
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from core.ops.delivery import DispatchOutcome
from core.redis_server import RedisServer
from core.runtime import open_runtime
from tests.conftest import make_app, make_settings
from tests.fakes.openai_server import Behaviour, Error, FakeOpenAI, Hang, Reply, last_user_text
from tests.scale.helpers import FileRecordingDelivery, WorkerProcess, scale_spec, turn, worker_env
from tests.scale.shutdown_cases import CASES, HEADER, Stopped, sigterm_with
from tests.scale.topology import Cluster, SentinelGroup

# Production timings (core/settings.py defaults), not the tests' fast ones.
PRODUCTION = {
    "parley_lock_lease": 10.0,
    "parley_lease_heartbeat": 3.0,
    "parley_queue_claim_idle": 10.0,
    "parley_shutdown_grace": 7.0,
    "parley_workers": 32,
}
WAIT_FOR_ALL = 60.0  # seconds after the last turn before the unanswered ones count as lost


Builder = Callable[[], contextlib.AbstractAsyncContextManager["Scenario"]]


@dataclass
class Row:
    name: str
    sent: int = 0
    answered: int = 0
    apologies: int = 0
    duplicates: int = 0
    lost: int = 0
    longest: float = 0.0
    after_fault: float = 0.0  # from the fault to the last reply
    note: str = ""  # printed under the table


@dataclass
class Scenario:
    """Where Redis is (env for the workers, settings for the sender), and how to break it."""

    name: str
    fault: Callable[[Scenario], Awaitable[None]]
    settings: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)
    responder: Callable[[dict[str, Any]], Behaviour] | None = None
    turns: int = 16
    pace: float = 0.25  # seconds between turns
    fault_after: float = 1.5  # seconds into sending
    conversations: int = 6
    fault_at: float = 0.0
    bot: str = "arcade"
    note: Callable[[Scenario], str] | None = None  # a line about the row, from the workers' logs


def slow_echo(seconds: float) -> Callable[[dict[str, Any]], Behaviour]:
    def respond(body: dict[str, Any]) -> Behaviour:
        text = f"You said: {last_user_text(body)}"
        return Reply(text, chunk_chars=2, delay=seconds / max(1, len(text) // 2))

    return respond


Responder = Callable[[dict[str, Any]], Behaviour]


def first_try(bad: Behaviour, then: Responder) -> Responder:
    """Every turn's first LLM request gets ``bad``; retries get ``then``."""
    seen: set[str] = set()

    def respond(body: dict[str, Any]) -> Behaviour:
        text = last_user_text(body)
        if text not in seen:
            seen.add(text)
            return bad
        return then(body)

    return respond


async def run_row(scenario: Scenario, folder: Path, llm: FakeOpenAI) -> Row:
    record = folder / f"{scenario.name}.jsonl"
    llm.responder = scenario.responder or slow_echo(1.0)
    env = {
        **scenario.env,
        "PARLEY_TEST_RECORD_FILE": str(record),
    }
    scenario.workers = [
        WorkerProcess(env, folder / f"{scenario.name}-{i}.log", bot=scenario.bot) for i in range(2)
    ]
    row = Row(scenario.name)
    sent_at: dict[str, float] = {}
    try:
        await asyncio.gather(*(w.ready(within=60) for w in scenario.workers))
        settings = make_settings(
            openai_base_url=llm.base_url,
            openai_api_key="k",
            parley_data_dir=folder / "sender",
            **{**PRODUCTION, "port": 0, "parley_ops_port": 0, **scenario.settings},
        )
        async with open_runtime(scale_spec(scenario.bot), make_app(settings)) as rt:  # the adapter side
            rt.ops.deliveries.register("test", FileRecordingDelivery(record, who="sender"))

            async def inject() -> None:
                await asyncio.sleep(scenario.fault_after)
                scenario.fault_at = time.time()
                await scenario.fault(scenario)

            faulting = asyncio.create_task(inject())
            for i in range(scenario.turns):
                text = f"{scenario.name} {i}"
                sent_at[text] = time.time()
                while True:  # an adapter whose dispatch fails leaves the event to the platform's retry
                    try:
                        outcome = await rt.dispatcher.dispatch(
                            turn(
                                text,
                                thread=f"t{i % scenario.conversations}",
                                user=f"u{i % scenario.conversations}",
                                event_id=f"{scenario.name}-{i}",
                            )
                        )
                    except Exception:
                        await asyncio.sleep(0.2)
                        continue
                    if outcome.outcome is not DispatchOutcome.BUSY:
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(scenario.pace)
            await faulting
            deadline = time.monotonic() + WAIT_FOR_ALL
            while time.monotonic() < deadline:
                if len({r["text"] for r in _records(record)} & {f"You said: {t}" for t in sent_at}) >= len(
                    sent_at
                ):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.0)  # a late duplicate shows up by now
            await rt.dispatcher.aclose(5.0)
    finally:
        for worker in scenario.workers:
            worker.close()
    if scenario.note is not None:
        row.note = scenario.note(scenario)
    records = _records(record)
    by_turn: Counter[str] = Counter()
    first: dict[str, dict[str, Any]] = {}
    for r in records:
        key = r["conversation"] + "|" + r["turn_id"]
        by_turn[key] += 1
        first.setdefault(key, r)
    answered_texts = {r["text"].removeprefix("You said: ") for r in first.values() if r["kind"] == "answer"}
    row.sent = len(sent_at)
    row.answered = len(answered_texts & set(sent_at))
    row.apologies = sum(1 for r in first.values() if r["kind"] != "answer")
    row.duplicates = sum(n - 1 for n in by_turn.values())
    row.lost = row.sent - len(first)
    delays = [first_at - sent_at[t] for t in sent_at for first_at in _first_times(records, t)]
    row.longest = max(delays, default=0.0)
    row.after_fault = max((r["at"] for r in first.values()), default=scenario.fault_at) - scenario.fault_at
    return row


def _first_times(records: list[dict[str, Any]], text: str) -> list[float]:
    times = [r["at"] for r in records if r["text"] == f"You said: {text}"]
    return [min(times)] if times else []


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------- the rows


@contextlib.asynccontextmanager
async def standalone(folder: Path, appendonly: bool = False) -> AsyncIterator[RedisServer]:
    server = RedisServer(folder / "redis", tcp=True, appendonly=appendonly)
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def kill_a_busy_worker(scenario: Scenario) -> None:
    scenario.workers[0].signal(signal.SIGKILL)


def env_for(url: str, llm: FakeOpenAI, **settings: Any) -> dict[str, str]:
    env = worker_env(url, llm.base_url, **{**PRODUCTION, **settings})
    env.update({k.upper(): str(v) for k, v in settings.items()})  # worker_env pins a few (LLM retries 0)
    env["PYTHONUNBUFFERED"] = "1"  # logs survive a SIGKILL
    return env


async def rows(names: list[str], folder: Path) -> list[Row]:
    out: list[Row] = []
    async with FakeOpenAI() as llm:

        async def row(name: str, build: Builder) -> None:
            if name not in names:
                return
            print(f"  running {name} ...", file=sys.stderr, flush=True)
            async with build() as scenario:
                out.append(await run_row(scenario, folder, llm))

        @contextlib.asynccontextmanager
        async def replica_sigkill() -> AsyncIterator[Scenario]:
            async with standalone(folder / "r1") as redis:
                yield Scenario(
                    "replica-sigkill",
                    kill_a_busy_worker,
                    settings={"redis_url": redis.url},
                    env=env_for(redis.url, llm),
                    responder=slow_echo(2.0),
                    turns=12,
                    conversations=12,  # one turn each: the delay is the recovery's, not a queue's
                )

        @contextlib.asynccontextmanager
        async def cluster_master_kill() -> AsyncIterator[Scenario]:
            cluster = await asyncio.to_thread(Cluster.start, folder / "cluster")
            try:

                async def kill(_s: Scenario) -> None:
                    await asyncio.to_thread(cluster.master_of("parley:arcade:queue").kill)

                yield Scenario(
                    "cluster-master-kill",
                    kill,
                    settings={"redis_url": cluster.url},
                    env=env_for(cluster.url, llm),
                )
            finally:
                await asyncio.to_thread(cluster.stop)

        @contextlib.asynccontextmanager
        async def sentinel_failover() -> AsyncIterator[Scenario]:
            group = await asyncio.to_thread(SentinelGroup.start, folder / "sentinel")
            try:

                async def kill(_s: Scenario) -> None:
                    await asyncio.to_thread(group.master.kill)

                env = env_for("", llm)
                env.pop("REDIS_URL")
                env.update({"REDIS_SENTINELS": group.sentinel_hosts, "REDIS_SENTINEL_MASTER": group.name})
                yield Scenario(
                    "sentinel-failover",
                    kill,
                    settings={"redis_sentinels": group.sentinel_hosts, "redis_sentinel_master": group.name},
                    env=env,
                )
            finally:
                await asyncio.to_thread(group.stop)

        @contextlib.asynccontextmanager
        async def redis_restart() -> AsyncIterator[Scenario]:
            async with standalone(folder / "r2", appendonly=True) as redis:

                async def restart(_s: Scenario) -> None:
                    await asyncio.to_thread(redis.stop)
                    await asyncio.sleep(1.0)
                    await asyncio.to_thread(redis.start)

                yield Scenario(
                    "redis-restart",
                    restart,
                    settings={"redis_url": redis.url},
                    env=env_for(redis.url, llm),
                )

        @contextlib.asynccontextmanager
        async def embeddings_down() -> AsyncIterator[Scenario]:
            async with standalone(folder / "emb") as redis, FakeOpenAI() as embeddings:
                env = env_for(
                    redis.url,
                    llm,
                    parley_mcp=False,  # the orders server (a process of its own) is not under test
                    embeddings_base_url=embeddings.base_url,
                    embeddings_api_key="embeddings-key",
                )
                await ingest_kb("support", env, folder / "emb")  # hybrid: chunks embedded by the endpoint
                used: list[int] = [len(embeddings.embedding_requests)]

                async def stop_embeddings(_s: Scenario) -> None:
                    used.append(len(embeddings.embedding_requests))
                    await embeddings.stop()

                def note(s: Scenario) -> str:
                    modes = retrieval_modes(s.workers)
                    return (
                        f"{s.name}: {used[-1] - used[0]} query embeddings before the endpoint stopped; "
                        f"retrieval {modes['hybrid']} hybrid / {modes['lexical']} lexical, breaker tripped "
                        f"{modes['tripped']}x (workers' kb_retrieved / kb_lexical_fallback)"
                    )

                yield Scenario(
                    "embeddings-down",
                    stop_embeddings,
                    settings={"redis_url": redis.url},
                    env=env,
                    bot="support",
                    note=note,
                )

        async def nothing(_s: Scenario) -> None:
            return None

        def llm_row(name: str, responder: Callable[[dict[str, Any]], Behaviour], **more: Any) -> Any:
            @contextlib.asynccontextmanager
            async def build() -> AsyncIterator[Scenario]:
                async with standalone(folder / name) as redis:
                    yield Scenario(
                        name,
                        nothing,
                        settings={"redis_url": redis.url},
                        env=env_for(redis.url, llm, **more),
                        responder=responder,
                        turns=8,
                    )

            return build

        await row("replica-sigkill", replica_sigkill)
        await row("cluster-master-kill", cluster_master_kill)
        await row("sentinel-failover", sentinel_failover)
        await row("redis-restart", redis_restart)
        await row(
            "llm-500s",
            llm_row("llm-500s", first_try(Error(500), slow_echo(0.5)), parley_llm_max_retries=2),
        )
        await row(
            "llm-timeouts",
            llm_row(
                "llm-timeouts",
                first_try(Hang(30), slow_echo(0.5)),
                parley_llm_max_retries=2,
                parley_llm_first_token_timeout=2.0,
            ),
        )
        # Replies longer than the claim time (10 s): heartbeats keep them with their owner.
        await row("slow-llm", llm_row("slow-llm", slow_echo(14.0)))
        await row("embeddings-down", embeddings_down)
    return out


async def ingest_kb(bot: str, env: dict[str, str], folder: Path) -> None:
    """``parley kb ingest --bot NAME`` with the row's settings (its Redis, its embeddings endpoint)."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bots", "kb", "ingest", "--bot", bot],
        cwd=folder,
        env=env,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kb ingest failed:\n{done.stdout[-2000:]!r}\n{done.stderr[-2000:]!r}")


def retrieval_modes(workers: list[WorkerProcess]) -> Counter[str]:
    """How the workers' turns retrieved (``kb_retrieved`` mode), and how often the breaker tripped."""
    seen: Counter[str] = Counter()
    for worker in workers:
        for line in worker.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if record.get("event") == "kb_retrieved":
                seen[str(record.get("mode"))] += 1
            elif record.get("event") == "kb_lexical_fallback":
                seen["tripped"] += 1
    return seen


ALL = [
    "replica-sigkill",
    "cluster-master-kill",
    "sentinel-failover",
    "redis-restart",
    "llm-500s",
    "llm-timeouts",
    "slow-llm",
    "embeddings-down",
]


def table(results: list[Row]) -> str:
    head = (
        f"{'fault':<22}{'sent':>6}{'answered':>10}{'apologies':>11}{'dupes':>7}{'lost':>6}{'longest':>10}"
        f"{'fault->last':>13}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.name:<22}{r.sent:>6}{r.answered:>10}{r.apologies:>11}{r.duplicates:>7}{r.lost:>6}"
            f"{r.longest:>9.1f}s{r.after_fault:>12.1f}s"
        )
    lines += [r.note for r in results if r.note]
    return "\n".join(lines)


async def shutdowns(cases: list[str], folder: Path) -> list[Stopped]:
    out = []
    for gone in cases:
        print(f"  shutdown with {gone} gone ...", file=sys.stderr, flush=True)
        grace = PRODUCTION["parley_shutdown_grace"]
        out.append(await sigterm_with(gone, folder / f"shutdown-{gone.replace('+', '-')}", grace))
    return out


def shutdown_table(stopped: list[Stopped]) -> str:
    grace = PRODUCTION["parley_shutdown_grace"]
    title = f"SIGTERM with a reply streaming, one dependency gone (grace {grace:g} s; exit target 10 s):"
    return "\n".join([title, HEADER, "-" * len(HEADER), *(s.line() for s in stopped)])


def _names(
    parser: argparse.ArgumentParser, given: str, known: tuple[str, ...] | list[str], what: str
) -> list[str]:
    names = [n.strip() for n in given.split(",") if n.strip()]
    unknown = set(names) - set(known)
    if unknown:
        parser.error(f"unknown {what}: {', '.join(sorted(unknown))}")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default=",".join(ALL), help=f"comma-separated, of: {', '.join(ALL)}")
    parser.add_argument(
        "--shutdown", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)} ('' for none)"
    )
    args = parser.parse_args()
    names = _names(parser, args.rows, ALL, "rows")
    cases = _names(parser, args.shutdown, CASES, "shutdown cases")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.basicConfig(level=logging.ERROR)
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    keep = os.environ.get("CHAOS_KEEP")  # a folder to keep the processes' logs in
    with tempfile.TemporaryDirectory(prefix="parley-chaos-") as tmp:
        folder = Path(keep) if keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        results = asyncio.run(rows(names, folder)) if names else []
        stopped = asyncio.run(shutdowns(cases, folder)) if cases else []
    if results:
        print(table(results))
    if stopped:
        print(("\n" if results else "") + shutdown_table(stopped))
    bad = [r.name for r in results if r.lost or r.duplicates]
    if bad:
        print(f"rows with lost or duplicate turns: {', '.join(bad)}")
    hung = [s.gone for s in stopped if s.returncode != 0]
    if hung:
        print(f"shutdowns that did not end cleanly: {', '.join(hung)}")
    return 1 if bad or hung else 0


if __name__ == "__main__":
    raise SystemExit(main())
