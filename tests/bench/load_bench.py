"""Load benchmark: N different users mention ``arcade`` at once, each in their own channel of one guild.

The bot is a real ``parley run --bot arcade`` process (:mod:`tests.bench.load_bot`: the Discord adapter, the
Redis queue and a worker, with the real discord.py, openai and redis-py clients). This process hosts the
test suite's fake Discord (REST + gateway) and fake OpenAI-compatible server, and starts a redis-server;
everything is on 127.0.0.1. The fake LLM answers every chat request with about 70 tokens, its first token
after 300 ms, then 60 tokens/s.

Per N it prints: replies completed, busy refusals (and any other answer), first visible text p50/p95 (the
user's message -> the bot's first message in that channel, as the fake Discord records it), whole answer
p50/p95 (-> the last post or edit in that channel), bot CPU ms per reply (the bot process's user+system
time over the run / replies), REST calls per reply (every call the fake Discord saw during the run / replies)
and the peak of LLM chat requests in flight (counted by the fake LLM). Then N=128 again with a cap of 32
generations (``max_concurrent_per_workspace=32`` on a copy of the config) against ceil(N/cap) x one reply's
time (the whole answer p50 at N=1). Targets are printed beside the figures, never asserted.

    python -m tests.bench.load_bench                  # make bench-load
    python -m tests.bench.load_bench --sizes 1 8 --no-cap-run
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import importlib
import io
import itertools
import json
import math
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from adapters.discord.settings import DiscordSettings
from bots.loader import load_bot
from core.redis_server import RedisServer
from core.settings import Settings
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord import payloads as p
from tests.fakes.openai_server import FakeOpenAI, Reply

ROOT = Path(__file__).resolve().parents[2]
CURSOR = " …"  # what the stream renderer appends to a reply still being written
_MESSAGE_PATH = re.compile(r"/channels/(\d+)/messages(?:/\d+)?")
# Four-letter words: with a leading space every token is one 5-character chunk of the fake's stream.
_WORDS = ("game", "play", "tale", "hero", "gold", "maze", "dice", "card", "team", "door", "lore", "king")

# Targets from issues 10, 21 and 25 (figures printed beside the values; nothing here fails a run).
TARGET_N = 32
TARGET_FIRST_P50 = 0.40  # issue 21 (issue 10 had 0.45)
TARGET_WHOLE_P95 = 2.2
TARGET_CPU_MS = 40.0  # at N=32 (issue 10)
TARGET_IDLE_MS_PER_S = 1.0  # issue 25: a quiet bot process
CAP_N, CAP = 128, 32
CAP_TOLERANCE = 0.15


@dataclass(frozen=True)
class LLMProfile:
    first_token: float = 0.3  # seconds to the first token
    tokens_per_s: float = 60.0
    reply_tokens: int = 70

    def text(self) -> str:
        words = [_WORDS[i % len(_WORDS)] for i in range(max(1, self.reply_tokens) - 1)]
        return "Well," + "".join(f" {w}" for w in words)  # "Well," and " word": 5 characters each

    def reply(self) -> Reply:
        return Reply(self.text(), chunk_chars=5, first_delay=self.first_token, tokens_per_s=self.tokens_per_s)


@dataclass(frozen=True)
class Run:
    label: str
    n: int
    cap: int | None = None  # max_concurrent_per_workspace on a copy of the config; None: as shipped
    rounds: int = 1  # N users at once, this many times in a row (fresh channels each round)

    @property
    def users(self) -> int:
        return self.n * self.rounds


@dataclass
class Channel:
    """One user's channel and what the fake Discord saw there."""

    data: dict[str, Any]
    user: dict[str, Any]
    sent_at: float = 0.0
    first_at: float | None = None
    last_at: float | None = None
    kind: str = "unanswered"  # reply, busy, other, unanswered
    text: str = ""

    @property
    def id(self) -> str:
        return str(self.data["id"])


BOT_ENV: dict[str, str] = {}  # --bot-env: settings for every bot process, over the bench's own


@dataclass
class Result:
    label: str
    n: int
    cap: int
    replies: int
    busy: int
    other: int
    unanswered: int
    first_p50_s: float | None
    first_p95_s: float | None
    whole_p50_s: float | None
    whole_p95_s: float | None
    cpu_ms_per_reply: float | None
    bot_cpu_ms: float | None  # the bot process over the whole run, refusals included
    rest_calls: int
    rest_calls_per_reply: float | None
    peak_llm_in_flight: int
    llm_chat_calls: int
    elapsed_s: float
    driver_cpu_pct: float  # this process (the fakes): high values mean the fakes may have slowed the run
    other_sample: str = ""
    rest_routes: dict[str, int] = field(default_factory=dict)
    rounds: int = 1  # N users at once, this many times in a row
    # The round's first message sent -> the fake model got a chat request (counted by the fake).
    request_p50_s: float | None = None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class Refusals:
    """Recognises the bot's "busy" texts: every persona's, and the configured one ({retry} filled in)."""

    def __init__(self, bot: str = "arcade") -> None:
        spec = load_bot(bot)
        templates = {persona.busy for persona in spec.personas.values()}
        templates.add(spec.config.limits.busy_text)
        self._templates = [t for t in templates if t.strip()]

    def is_busy(self, text: str) -> bool:
        for template in self._templates:
            head, sep, tail = template.partition("{retry}")
            if (sep and text.startswith(head) and text.endswith(tail)) or text == template:
                return True
        return False


# ---------------------------------------------------------------------- the bot process


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux /proc); None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc); [] where /proc does not list children."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += [int(child), *child_pids(int(child))]
    return found


class BotProcess:
    """``python -m tests.bench.load_bot``: ``parley run`` for ``bot`` (optionally with another cap), ready
    when its log shows ``ready_event``. With ``profile_to`` set the bot runs under cProfile (stats there)."""

    def __init__(
        self,
        env: dict[str, str],
        workdir: Path,
        cap: int | None,
        *,
        bot: str = "arcade",
        ready_event: str = "discord_ready",
        profile_to: Path | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.processes = int(env.get("PARLEY_WORKER_PROCESSES", "1"))
        self.worker_children = self.processes > 1
        self.log_path = workdir / "bot.log"
        self._ready = f'"{ready_event}"'
        self._log = self.log_path.open("wb")
        argv = [sys.executable, "-m", "tests.bench.load_bot", "--bot", bot]
        if cap is not None:
            argv += ["--cap", str(cap)]
        env = {**env, **BOT_ENV}
        env.pop("BENCH_PROFILE", None)
        self.profiled = profile_to is not None
        if profile_to is not None:
            env["BENCH_PROFILE"] = str(profile_to)
        # The scratch directory as cwd: no developer's .env is read.
        self.proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    async def ready(self, within: float = 60.0) -> None:
        """Its platform connected and every worker started (its worker processes' too: they log here)."""
        deadline = time.monotonic() + within
        while self._ready not in self.output() or self._workers_started() < self.processes:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bot did not get ready:\n{self.output()}")
            await asyncio.sleep(0.05)

    def _workers_started(self) -> int:
        self._log.flush()
        return self.log_path.read_text(errors="replace").count('"worker_started"')

    def cpu(self) -> float | None:
        """The bot's CPU, with its worker processes' (``PARLEY_WORKER_PROCESSES``) when it has some."""
        own = cpu_seconds(self.proc.pid)
        if own is None or not self.worker_children:
            return own
        return own + self.children_cpu()

    def start_profile(self) -> None:
        """A profiled bot starts counting now (SIGUSR1; load_bot enables its profiler)."""
        if self.profiled:
            self.proc.send_signal(signal.SIGUSR1)

    def children_cpu(self) -> float:
        """User + system CPU of the bot's live child processes (the support bot's MCP tools server)."""
        return sum(cpu_seconds(pid) or 0.0 for pid in child_pids(self.proc.pid))

    async def stop(self, within: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, within)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        self._log.close()


@dataclass
class Idle:
    """The bot at rest: CPU over ``seconds`` quiet seconds after its runs, in ms per second."""

    seconds: float
    bot_ms_per_s: float | None
    children_ms_per_s: float  # child processes (the support bot's MCP tools server), beside it
    platform_calls: int  # calls the fake platform saw meanwhile


async def measure_idle(bot: BotProcess, seconds: float, calls: Callable[[], int]) -> Idle:
    """CPU of the quiet bot over ``seconds`` (the fakes idle too: nobody sends anything)."""
    before, children, seen = bot.cpu(), bot.children_cpu(), calls()
    await asyncio.sleep(seconds)
    after = bot.cpu()
    per_s = None if before is None or after is None else round((after - before) * 1000 / seconds, 2)
    kids = round((bot.children_cpu() - children) * 1000 / seconds, 2)
    return Idle(seconds, per_s, kids, calls() - seen)


def profile_path(platform: str, name: str) -> Path | None:
    """Where a bot process's cProfile stats go when ``BENCH_PROFILE`` is set (None: not profiled)."""
    if not os.environ.get("BENCH_PROFILE"):
        return None
    out = ROOT / ".parley" / f"bench-profile-{platform}-{name}.prof"
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def print_profile(path: Path, top: int = 30) -> None:
    """The top items of one bot process's profile (CPU time, after the warm-up), by own time and by
    cumulative time, to stderr."""
    if not path.exists():
        print(f"(no profile at {path}: the bot did not exit cleanly)", file=sys.stderr)
        return
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(str(path), stream=out)
        stats.strip_dirs().sort_stats(order).print_stats(top)
        print(f"\n=== {path.name}: top {top} by {order} (CPU seconds) ===", file=sys.stderr)
        print(out.getvalue().strip("\n"), file=sys.stderr)


def bot_env(
    redis_url: str,
    llm: FakeOpenAI,
    discord: FakeDiscord,
    workers: int | None,
    worker_processes: int | None = None,
) -> dict[str, str]:
    prefixes = ("PARLEY_", "OPENAI_", "REDIS_", "DISCORD_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        {
            "REDIS_URL": redis_url,
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": "bench-key",
            "OPENAI_MODEL": "fake-model",
            "DISCORD_TOKEN": discord.token,
            "DISCORD_API_URL": discord.api_url,
            "DISCORD_GUILD_READY_TIMEOUT": "0.2",  # start-up only: on_ready 0.2 s after the last guild
            "PORT": "0",
            "PARLEY_OPS_HOST": "127.0.0.1",
            "PARLEY_OPS_PORT": "0",  # any free port: other bots on this host may hold 9090
            "PARLEY_LOG_FORMAT": "json",
            "PARLEY_LOG_LEVEL": "INFO",  # the shipped level; the bench waits for "discord_ready"
            "TIKTOKEN_CACHE_DIR": "",  # never download an encoding
            "PYTHONPATH": str(ROOT),
        }
    )
    if workers is not None:
        env["PARLEY_WORKERS"] = str(workers)
    if worker_processes is not None:
        env["PARLEY_WORKER_PROCESSES"] = str(worker_processes)
    return env


@contextlib.asynccontextmanager
async def running_bot(
    env: dict[str, str],
    workdir: Path,
    cap: int | None,
    within: float = 60.0,
    *,
    bot: str = "arcade",
    ready_event: str = "discord_ready",
    profile_to: Path | None = None,
) -> AsyncIterator[BotProcess]:
    process = BotProcess(env, workdir, cap, bot=bot, ready_event=ready_event, profile_to=profile_to)
    try:
        await process.ready(within)
        yield process
    finally:
        await process.stop()


# ---------------------------------------------------------------------- one run


def classify(channels: Iterable[Channel], discord: FakeDiscord, expected: str, refusals: Refusals) -> None:
    """Each channel's state from the bot's latest message there: reply, busy, other, or still going."""
    latest: dict[str, dict[str, Any]] = {}
    for message in discord.messages.values():
        if message["author"]["id"] == discord.app_id:
            cid = str(message["channel_id"])
            if cid not in latest or int(message["id"]) > int(latest[cid]["id"]):
                latest[cid] = message
    for channel in channels:
        shown = latest.get(channel.id)
        if shown is None:
            continue
        text = shown.get("content") or ""
        channel.text = text
        if text == expected:
            channel.kind = "reply"
        elif text.endswith(CURSOR):
            channel.kind = "writing"
        elif refusals.is_busy(text):
            channel.kind = "busy"
        else:
            channel.kind = "other"


def timings(channels: Iterable[Channel], discord: FakeDiscord, since: int) -> dict[str, int]:
    """First and last post/edit per channel, from the fake's log of REST calls; the routes counted."""
    by_id = {c.id: c for c in channels}
    routes: dict[str, int] = {}
    for call in discord.calls[since:]:
        routes[call.route] = routes.get(call.route, 0) + 1
        match = _MESSAGE_PATH.fullmatch(call.path)
        if match is None or call.method not in ("POST", "PATCH") or not 200 <= call.status < 300:
            continue
        channel = by_id.get(match.group(1))
        if channel is None:
            continue
        if call.method == "POST" and channel.first_at is None:
            channel.first_at = call.at
        channel.last_at = call.at
    return routes


async def settle(
    channels: list[Channel],
    classify_now: Callable[[], None],
    calls: Callable[[], int],
    llm: FakeOpenAI,
    *,
    deadline: float,
    quiet: float = 10.0,
) -> None:
    """Until every channel has its final answer, or nothing has happened for ``quiet`` seconds (no platform
    call, no LLM request in flight: a turn dropped or refused silently), or the deadline. Both platforms."""
    last_activity, seen_calls = time.monotonic(), calls()
    while True:
        classify_now()
        if all(c.kind in ("reply", "busy", "other") for c in channels):
            return
        now = time.monotonic()
        if calls() != seen_calls or llm.chat_in_flight:
            last_activity, seen_calls = now, calls()
        if now - last_activity > quiet or now > deadline:
            return
        await asyncio.sleep(0.1)


async def wait_until_settled(
    channels: list[Any],
    fake: Any,
    llm: FakeOpenAI,
    expected: str,
    refusals: Refusals,
    *,
    deadline: float,
    classify: Callable[[Any, Any, str, Refusals], None] = classify,
) -> None:
    """Until ``channels`` settle on ``fake`` (the fake Discord, or the fake Slack with its ``classify``)."""
    await settle(
        channels,
        lambda: classify(channels, fake, expected, refusals),
        lambda: len(fake.calls),
        llm,
        deadline=deadline,
    )


_serial = itertools.count(1)
UNIQUE_TEXTS = False  # --unique-texts: every message a text never sent before (set by cli())


def message_text(template: str, i: int) -> str:
    """The text user ``i`` sends. As shipped the texts repeat across runs, so the bot's in-process moderation
    cache answers repeats (figures stay comparable with earlier sessions); ``--unique-texts`` makes every
    message new, as real users' are: each pays its moderation requests (and, on Slack, its embedding)."""
    text = template.format(i=i)
    return f"{text} (message {next(_serial)})" if UNIQUE_TEXTS else text


async def measure(
    run: Run,
    channels: list[Channel],
    discord: FakeDiscord,
    llm: FakeOpenAI,
    bot: BotProcess,
    profile: LLMProfile,
    refusals: Refusals,
    cap: int,
    time_limit: float,
) -> Result:
    expected = profile.text()
    since, chats_before = len(discord.calls), len(llm.chat_requests)
    llm.reset_peak()
    cpu_before, driver_before, started = bot.cpu(), time.process_time(), time.monotonic()
    for batch in rounds(channels, run.n):
        for i, channel in enumerate(batch):
            channel.sent_at = time.monotonic()
            await discord.send_message(
                message_text("hi, I'm player {i}: tell me something fun", i),
                author=channel.user,
                channel=channel.data,
                mention_bot=True,
            )
        await wait_until_settled(batch, discord, llm, expected, refusals, deadline=started + time_limit)
    elapsed = time.monotonic() - started
    cpu_after, driver_cpu = bot.cpu(), time.process_time() - driver_before
    routes = timings(channels, discord, since)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return result_of(
        run,
        cap,
        channels,
        llm,
        calls=len(discord.calls) - since,
        cpu=cpu,
        elapsed=elapsed,
        driver_cpu=driver_cpu,
        routes=routes,
        chats_before=chats_before,
    )


def result_of(
    run: Any,
    cap: int,
    channels: list[Any],
    llm: FakeOpenAI,
    *,
    calls: int,
    cpu: float | None,
    elapsed: float,
    driver_cpu: float,
    routes: dict[str, int],
    chats_before: int,
) -> Result:
    """One run's figures from its channels (shared by the Discord and Slack variants)."""
    answered = [c for c in channels if c.kind == "reply"]
    # Each chat request against the start of its round (the round's first message sent): the bot's time
    # before the model is asked, apart from the model's first token and the delivery after it.
    starts = sorted(min(c.sent_at for c in batch) for batch in rounds(channels, run.n) if batch[0].sent_at)
    asked = []
    for request in llm.chat_requests[chats_before:]:
        before = bisect.bisect_right(starts, request.at)
        if before:
            asked.append(request.at - starts[before - 1])
    firsts = [c.first_at - c.sent_at for c in answered if c.first_at is not None]
    wholes = [c.last_at - c.sent_at for c in answered if c.last_at is not None]
    replies = len(answered)
    others = [c for c in channels if c.kind == "other"]
    return Result(
        label=run.label,
        n=run.n,
        cap=cap,
        replies=replies,
        busy=sum(c.kind == "busy" for c in channels),
        other=len(others),
        unanswered=sum(c.kind in ("unanswered", "writing") for c in channels),
        first_p50_s=_round(percentile(firsts, 0.5)),
        first_p95_s=_round(percentile(firsts, 0.95)),
        whole_p50_s=_round(percentile(wholes, 0.5)),
        whole_p95_s=_round(percentile(wholes, 0.95)),
        cpu_ms_per_reply=round(cpu * 1000 / replies, 1) if cpu is not None and replies else None,
        bot_cpu_ms=None if cpu is None else round(cpu * 1000, 1),
        rest_calls=calls,
        rest_calls_per_reply=round(calls / replies, 1) if replies else None,
        peak_llm_in_flight=llm.peak_chat_in_flight,
        llm_chat_calls=len(llm.chat_requests) - chats_before,
        elapsed_s=round(elapsed, 2),
        driver_cpu_pct=round(100 * driver_cpu / elapsed, 1) if elapsed else 0.0,
        other_sample=others[0].text[:200] if others else "",
        rest_routes=dict(sorted(routes.items(), key=lambda kv: -kv[1])),
        rounds=run.rounds,
        request_p50_s=_round(percentile(asked, 0.5)),
    )


def rounds(channels: list[Any], n: int) -> Iterator[list[Any]]:
    """``channels`` in batches of ``n``: one batch per round."""
    for start in range(0, len(channels), n):
        yield channels[start : start + n]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def warm_up(discord: FakeDiscord, llm: FakeOpenAI, profile: LLMProfile, refusals: Refusals) -> None:
    """One turn through the fresh process (imports, pools, first connections), not measured."""
    channel = Channel(await discord.add_text_channel("warm-up"), p.user(None, "warmup"))
    await discord.send_message("hello", author=channel.user, channel=channel.data, mention_bot=True)
    await wait_until_settled(
        [channel], discord, llm, profile.text(), refusals, deadline=time.monotonic() + 30
    )
    if channel.kind != "reply":
        raise RuntimeError(f"warm-up turn got no reply ({channel.kind}: {channel.text!r})")


# ---------------------------------------------------------------------- the whole bench


def default_plan(sizes: Iterable[int], cap_run: bool, one_rounds: int = 5) -> list[Run]:
    """The shipped bot at each size (N=1 as ``one_rounds`` replies in a row: CPU is counted in 10 ms
    ticks), then the cap run."""
    plan = [Run("shipped", n, rounds=one_rounds if n == 1 else 1) for n in sizes]
    if cap_run:
        plan.append(Run(f"cap {CAP}", CAP_N, CAP))
    return plan


@dataclass(frozen=True)
class Targets:
    platform: str
    cpu_ms_at_1: float  # issue 25: CPU per reply at N=1 with the shipped bot
    first_p50: float | None = TARGET_FIRST_P50  # at N=TARGET_N (None: no target on this platform)
    whole_p95: float | None = TARGET_WHOLE_P95
    cpu_ms_at_n: float | None = TARGET_CPU_MS
    idle_ms_per_s: float = TARGET_IDLE_MS_PER_S


DISCORD_TARGETS = Targets("discord", cpu_ms_at_1=40.0)


@dataclass
class BenchInfo:
    shipped_cap: int
    workers: int
    workers_set: bool  # --workers changed PARLEY_WORKERS from the shipped default
    worker_processes: int  # PARLEY_WORKER_PROCESSES (--worker-processes)
    delivery_slots: int
    edit_interval: float
    profile: LLMProfile
    cpu_source: str = field(
        default_factory=lambda: (
            "/proc/<pid>/stat user+system time of the bot process "
            f"({1000 / os.sysconf('SC_CLK_TCK'):.0f} ms ticks)"
        )
    )
    topology: str = (
        "bot: its own process (parley run: Discord adapter + Redis queue + worker, and its worker processes "
        "if any); this process: fake Discord + fake LLM + the driver; redis-server: its own process"
    )


def bench_info(profile: LLMProfile, workers: int | None, worker_processes: int | None = None) -> BenchInfo:
    spec = load_bot("arcade")
    discord = spec.platform_config("discord")
    return BenchInfo(
        shipped_cap=spec.config.limits.max_concurrent_per_workspace,
        workers=workers or int(Settings.model_fields["parley_workers"].default),
        workers_set=workers is not None,
        worker_processes=worker_processes or int(Settings.model_fields["parley_worker_processes"].default),
        delivery_slots=int(DiscordSettings.model_fields["max_concurrent_turns"].default),
        edit_interval=float(
            discord.get("edit_interval", DiscordSettings.model_fields["edit_interval"].default)
        ),
        profile=profile,
    )


@dataclass
class Outcome:
    results: list[Result]  # one per Run, in plan order
    idle: Idle | None  # the shipped bot at rest after its runs (None: not measured)


async def bench(
    plan: list[Run],
    profile: LLMProfile,
    workdir: Path,
    *,
    redis_url: str | None = None,
    workers: int | None = None,
    time_limit: float = 90.0,
    idle_seconds: float = 0.0,
    worker_processes: int | None = None,
) -> Outcome:
    """Run ``plan`` (one bot process per cap, runs in order) and return one Result per Run, and the
    shipped bot's idle CPU over ``idle_seconds`` after its runs (0: not measured)."""
    server = None
    if redis_url is None:
        server = RedisServer(workdir / "redis", tcp=True, appendonly=False)
        await asyncio.to_thread(server.start)
        redis_url = server.url
    refusals = Refusals()
    shipped_cap = load_bot("arcade").config.limits.max_concurrent_per_workspace
    results: dict[int, Result] = {}
    idle: Idle | None = None
    try:
        async with FakeDiscord() as discord, FakeOpenAI() as llm:
            llm.responder = lambda body: profile.reply()
            # Every user's channel exists before the bot connects (it arrives in GUILD_CREATE).
            channels = {
                id(run): [
                    Channel(
                        await discord.add_text_channel(f"{run.label}-{run.n}-{i}".replace(" ", "-")),
                        p.user(None, f"player-{k}-{i}", global_name=f"Player {k}.{i}"),
                    )
                    for i in range(run.users)
                ]
                for k, run in enumerate(plan)
            }
            env = bot_env(redis_url, llm, discord, workers, worker_processes)
            for cap in dict.fromkeys(run.cap for run in plan):
                await _flush(redis_url)  # each bot process starts on an empty Redis
                name = "shipped" if cap is None else f"cap-{cap}"
                prof = profile_path("discord", name)
                async with running_bot(env, workdir / name, cap, profile_to=prof) as bot:
                    await warm_up(discord, llm, profile, refusals)
                    bot.start_profile()
                    done, at_rest = await measure_runs(
                        [r for r in plan if r.cap == cap],
                        measure,
                        (discord, llm, bot, profile, refusals),
                        channels,
                        cap if cap is not None else shipped_cap,
                        time_limit,
                        idle_seconds if cap is None else 0,
                        lambda: len(discord.calls),
                        tag="",
                    )
                    results.update(done)
                    idle = at_rest or idle
                if prof is not None:
                    print_profile(prof)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
    return Outcome([results[id(run)] for run in plan], idle)


async def measure_runs(
    runs: list[Run],
    measure: Any,
    parts: tuple[Any, ...],
    channels: dict[int, list[Any]],
    cap: int,
    time_limit: float,
    idle_seconds: float,
    calls: Callable[[], int],
    *,
    tag: str,
) -> tuple[dict[int, Result], Idle | None]:
    """One bot process's runs, one after another (``measure(run, channels, fake, llm, bot, profile,
    refusals, cap, time_limit)``), then its idle CPU when ``idle_seconds``: shared by both platforms."""
    bot = parts[2]
    results: dict[int, Result] = {}
    for run in runs:
        await asyncio.sleep(0.5)  # let the previous run's last calls land
        result = await measure(run, channels[id(run)], *parts, cap, time_limit)
        results[id(run)] = result
        print(f"  done{tag}: {summary_line(result)}", file=sys.stderr, flush=True)
    idle = None
    if idle_seconds > 0:
        await asyncio.sleep(2.0)  # the last edits, stream calls and memory writes land first
        idle = await measure_idle(bot, idle_seconds, calls)
        print(f"  done{tag}: idle {idle.bot_ms_per_s} ms/s", file=sys.stderr, flush=True)
    return results, idle


async def _flush(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


# ---------------------------------------------------------------------- report


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary_line(r: Result) -> str:
    return (
        f"{r.label} N={r.n}: {r.replies} replies, {r.busy} busy, {r.other} other, {r.unanswered} unanswered"
        f" in {r.elapsed_s:.1f}s"
    )


def one_reply_time(results: list[Result]) -> float | None:
    """One reply's whole time: the whole answer p50 of the N=1 run."""
    for r in results:
        if r.n == 1 and r.whole_p50_s is not None:
            return r.whole_p50_s
    return None


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def targets(results: list[Result], goal: Targets = DISCORD_TARGETS, idle: Idle | None = None) -> list[str]:
    lines = []
    at_n = next((r for r in results if r.n == TARGET_N and r.label == "shipped"), None)
    at_1 = next((r for r in results if r.n == 1 and r.label == "shipped"), None)
    for r in results:
        ok = r.replies == r.n * r.rounds
        lines.append(f"  {r.label} N={r.n}: all answered: {r.replies}/{r.n * r.rounds} -> {_mark(ok)}")
    if at_1 is not None:
        cpu = at_1.cpu_ms_per_reply
        lines.append(
            f"  N=1: CPU {_n(cpu)} ms/reply <= {goal.cpu_ms_at_1:.0f} ms (issue 25) -> "
            f"{_mark(None if cpu is None else cpu <= goal.cpu_ms_at_1)}"
        )
    if at_n is not None:
        first, whole, cpu = at_n.first_p50_s, at_n.whole_p95_s, at_n.cpu_ms_per_reply
        if goal.first_p50 is not None:
            lines.append(
                f"  N={TARGET_N}: first visible p50 {_s(first)} s <= {goal.first_p50} s -> "
                f"{_mark(None if first is None else first <= goal.first_p50)}"
            )
        if goal.whole_p95 is not None:
            lines.append(
                f"  N={TARGET_N}: whole answer p95 {_s(whole)} s <= {goal.whole_p95} s -> "
                f"{_mark(None if whole is None else whole <= goal.whole_p95)}"
            )
        if goal.cpu_ms_at_n is not None:
            lines.append(
                f"  N={TARGET_N}: CPU {_n(cpu)} ms/reply <= {goal.cpu_ms_at_n:.0f} ms -> "
                f"{_mark(None if cpu is None else cpu <= goal.cpu_ms_at_n)}"
            )
    if idle is not None:
        per_s = idle.bot_ms_per_s
        lines.append(
            f"  idle: {_s(per_s)} ms CPU per second <= {goal.idle_ms_per_s:g} (issue 25) -> "
            f"{_mark(None if per_s is None else per_s <= goal.idle_ms_per_s)}"
        )
    capped = next((r for r in results if r.label == f"cap {CAP}"), None)
    one = one_reply_time(results)
    if capped is not None:
        lines.append(
            f"  N={capped.n} cap {CAP}: peak in flight {capped.peak_llm_in_flight} <= {CAP} -> "
            f"{_mark(capped.peak_llm_in_flight <= CAP)}"
        )
        if one is not None:
            ref = math.ceil(capped.n / CAP) * one
            whole = capped.whole_p95_s
            ratio = None if whole is None else whole / ref
            lines.append(
                f"  N={capped.n} cap {CAP}: whole answer p95 {_s(whole)} s vs ceil({capped.n}/{CAP}) x "
                f"{one:.2f} s = {ref:.2f} s (x{_s(ratio)}, within {CAP_TOLERANCE:.0%}) -> "
                f"{_mark(None if ratio is None else ratio <= 1 + CAP_TOLERANCE)}"
            )
    return lines


def table(results: list[Result], calls_label: str) -> list[str]:
    """The per-run rows; ``calls_label`` names the platform's calls column (REST/r, Slack/r)."""
    lines = [
        f"{'run':<9}{'N':>5}{'cap':>4}{'replies':>8}{'busy':>5}{'other':>6}{'none':>5}"
        f"{'first p50':>10}{'p95':>6}{'whole p50':>10}{'p95':>6}{'CPU ms/r':>9}{calls_label:>8}"
        f"{'LLM peak':>9}{'secs':>6}{'fakes%':>7}{'asked p50':>10}",
    ]
    for r in results:
        lines.append(
            f"{r.label:<9}{_size(r):>5}{r.cap:>4}{r.replies:>8}{r.busy:>5}{r.other:>6}{r.unanswered:>5}"
            f"{_s(r.first_p50_s):>10}{_s(r.first_p95_s):>6}{_s(r.whole_p50_s):>10}{_s(r.whole_p95_s):>6}"
            f"{_n(r.cpu_ms_per_reply):>9}{_n(r.rest_calls_per_reply):>8}{r.peak_llm_in_flight:>9}"
            f"{r.elapsed_s:>6.1f}{r.driver_cpu_pct:>7.0f}{_s(r.request_p50_s):>10}"
        )
    for r in results:
        if r.other_sample:
            lines.append(f"  {r.label} N={r.n}, an 'other' answer: {r.other_sample!r}")
    return lines


def _size(r: Result) -> str:
    return str(r.n) if r.rounds == 1 else f"{r.n}x{r.rounds}"


def idle_line(idle: Idle | None) -> list[str]:
    if idle is None:
        return []
    return [
        f"idle: {_s(idle.bot_ms_per_s)} ms CPU per second over {idle.seconds:g} quiet seconds (bot "
        f"process; its child processes {idle.children_ms_per_s:.2f} ms/s; {idle.platform_calls} platform "
        "calls meanwhile)"
    ]


def load_line() -> str:
    """The machine's load while the bench ran: other processes share the cores."""
    one, five, fifteen = os.getloadavg()
    texts = (
        "every message new (--unique-texts)"
        if UNIQUE_TEXTS
        else "repeated across runs (moderation cache hits)"
    )
    return (
        f"machine: {os.cpu_count()} cores, load average {one:.2f} {five:.2f} {fifteen:.2f} (at the end)\n"
        f"texts: {texts}"
    )


def report(results: list[Result], info: BenchInfo, idle: Idle | None = None) -> str:
    pr = info.profile
    lines = [
        "Parley load benchmark: N users mention arcade at once, one channel each, one Discord guild",
        f"fake LLM: first token {pr.first_token * 1000:.0f} ms, {pr.tokens_per_s:g} tokens/s, "
        f"{pr.reply_tokens} tokens per reply",
        f"arcade as shipped: max_concurrent_per_workspace={info.shipped_cap}, "
        f"PARLEY_WORKERS={info.workers}{' (set by --workers)' if info.workers_set else ''}, "
        f"PARLEY_WORKER_PROCESSES={info.worker_processes}, "
        f"DISCORD_MAX_CONCURRENT_TURNS={info.delivery_slots}, edit_interval={info.edit_interval:g} s",
        f"{info.topology}",
        f"CPU: {info.cpu_source}; times over answered turns only",
        load_line(),
        "",
        *table(results, "REST/r"),
        *idle_line(idle),
    ]
    lines += ["", "Targets (issues 10, 21, 25; figures, not assertions):"]
    lines += targets(results, DISCORD_TARGETS, idle)
    lines += [
        "",
        "replies: the LLM's whole text shown; busy: the persona's busy text; other: any other final text;",
        "none: nothing final in the channel. first/whole in seconds from the user's message to the bot's",
        "first post / last post or edit there. CPU ms/r and REST/r: everything over the run (refusals",
        "included) / replies. fakes%: CPU of this process (fakes + driver) over the run. asked p50: the",
        "round's first message sent -> the fake model got a chat request (the bot's time before it asks).",
    ]
    return "\n".join(lines)


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--platform", choices=("discord", "slack", "both"), default="both", help="which bot to load"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32, 128], help="users at once")
    parser.add_argument(
        "--unique-texts", action="store_true", help="every message a new text (no moderation-cache repeats)"
    )
    parser.add_argument("--no-cap-run", action="store_true", help=f"skip N={CAP_N} with a cap of {CAP}")
    parser.add_argument("--workers", type=int, default=None, help="PARLEY_WORKERS (default: as shipped)")
    parser.add_argument(
        "--worker-processes", type=int, default=None, help="PARLEY_WORKER_PROCESSES (default: as shipped)"
    )
    parser.add_argument("--first-token", type=float, default=0.3, help="seconds to the first token")
    parser.add_argument("--tokens-per-s", type=float, default=60.0)
    parser.add_argument("--reply-tokens", type=int, default=70)
    parser.add_argument("--time-limit", type=float, default=90.0, help="seconds per run before giving up")
    parser.add_argument(
        "--idle-seconds", type=float, default=30.0, help="quiet seconds for idle CPU (0: skip)"
    )
    parser.add_argument(
        "--bot-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the bot processes (repeatable), e.g. PARLEY_LLM_QUIET_STREAMS=false",
    )
    parser.add_argument("--json", type=Path, default=ROOT / ".parley" / "bench-load.json")
    args = parser.parse_args()
    global UNIQUE_TEXTS
    UNIQUE_TEXTS = args.unique_texts
    for pair in args.bot_env:
        name, sep, value = pair.partition("=")
        if not sep:
            parser.error(f"--bot-env {pair!r}: NAME=VALUE")
        BOT_ENV[name] = value
    # Run as `python -m`, this module is __main__; the Slack variant reads the imported copy's flag.
    importlib.import_module("tests.bench.load_bench").UNIQUE_TEXTS = args.unique_texts
    profile = LLMProfile(args.first_token, args.tokens_per_s, args.reply_tokens)
    payload: dict[str, Any] = {}
    if args.platform in ("discord", "both"):
        plan = default_plan(args.sizes, not args.no_cap_run)
        with tempfile.TemporaryDirectory(prefix="parley-load-bench-") as tmp:
            outcome = asyncio.run(
                bench(
                    plan,
                    profile,
                    Path(tmp),
                    workers=args.workers,
                    time_limit=args.time_limit,
                    idle_seconds=args.idle_seconds,
                    worker_processes=args.worker_processes,
                )
            )
        info = bench_info(profile, args.workers, args.worker_processes)
        print(report(outcome.results, info, outcome.idle), flush=True)
        payload["discord"] = {
            "info": asdict(info),
            "one_reply_s": one_reply_time(outcome.results),
            "results": [asdict(r) for r in outcome.results],
            "idle": None if outcome.idle is None else asdict(outcome.idle),
        }
    if args.platform in ("slack", "both"):
        from tests.bench import load_slack  # here: it imports this module

        if payload:
            print()
        payload["slack"] = load_slack.run(args, profile)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2))
    print(f"\n(written to {args.json})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
