"""Load benchmark, Slack variant: N different users mention ``support`` at once, each in their own channel.

The bot is a real ``parley run --bot support`` process (:mod:`tests.bench.load_bot`: the Slack adapter in
Socket Mode, the Redis queue and a worker, with the real slack-bolt / slack-sdk, openai and redis-py
clients, its MCP tools server, strict moderation and knowledge-base retrieval as shipped). This process hosts
the test suite's fake Slack (Web API + Socket Mode websocket) and fake OpenAI-compatible server (chat,
moderations), and starts a redis-server; the knowledge base is ingested from ``bots/support/kb`` (hybrid
with the embedded model, as shipped without an embeddings endpoint) before the bot starts. Everything is on
127.0.0.1; the fake LLM as in :mod:`tests.bench.load_bench`.

Per N: first visible text p50/p95 (the envelope sent -> the bot's first ``chat.startStream`` or
``chat.postMessage`` in that channel, as the fake Slack records it), whole answer p50/p95 (-> the last
stream/post/update call there), bot CPU ms per reply, Slack Web API calls per reply (every call the fake
saw during the run / replies), the peak of LLM chat requests in flight; then the bot's idle CPU over quiet
seconds.

    python -m tests.bench.load_bench --platform slack     # make bench-load runs both platforms
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bots.loader import load_bot
from core.redis_server import RedisServer
from tests.bench import load_bench
from tests.bench.load_bench import (
    ROOT,
    Idle,
    LLMProfile,
    Outcome,
    Refusals,
    Result,
    Run,
    Targets,
    _flush,
    default_plan,
    idle_line,
    load_line,
    measure_runs,
    one_reply_time,
    print_profile,
    profile_path,
    result_of,
    rounds,
    running_bot,
    table,
    targets,
    wait_until_settled,
)
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq

BOT = "support"
# A question the sample help centre covers (kb/orders), so retrieval finds it and the LLM is asked.
QUESTION = "How do I track my parcel? (customer {i})"
SLACK_TARGETS = Targets("slack", cpu_ms_at_1=45.0, first_p50=None, whole_p95=None, cpu_ms_at_n=None)
_FIRST = frozenset({"chat.startStream", "chat.postMessage"})
_SHOWN = _FIRST | {"chat.appendStream", "chat.stopStream", "chat.update"}


@dataclass
class Channel:
    """One user's channel and what the fake Slack saw there."""

    id: str
    user: str
    sent_at: float = 0.0
    first_at: float | None = None
    last_at: float | None = None
    kind: str = "unanswered"  # reply, busy, other, writing, unanswered
    text: str = ""


def slack_env(redis_url: str, llm: FakeOpenAI, slack: FakeSlack, workdir: Path) -> dict[str, str]:
    prefixes = ("PARLEY_", "OPENAI_", "REDIS_", "DISCORD_", "SLACK_", "EMBEDDINGS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k != "PORT"}
    env.update(
        {
            "REDIS_URL": redis_url,
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": "bench-key",
            "OPENAI_MODEL": "fake-model",
            "SLACK_APP_TOKEN": slack.app_token,
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_API_URL": slack.api_url,
            "PORT": "0",
            "PARLEY_OPS_PORT": "0",
            "PARLEY_OPS_HOST": "127.0.0.1",
            "PARLEY_HTTP_HOST": "127.0.0.1",
            "PARLEY_LOG_FORMAT": "json",
            "PARLEY_LOG_LEVEL": "INFO",  # the shipped level; the bench waits for "slack_socket_connected"
            "PARLEY_SUPPORT_DB": str(workdir / "support.db"),
            "TIKTOKEN_CACHE_DIR": "",  # never download an encoding
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


async def prepare(env: dict[str, str], workdir: Path) -> None:
    """The orders database and the knowledge-base index, as ``make support-db`` and ``make kb`` build them."""
    for argv in (
        ["-m", "bots.support.tools", "--build-db", "--db", env["PARLEY_SUPPORT_DB"]],
        ["-m", "bots", "kb", "ingest", "--bot", BOT],
    ):
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, *argv], cwd=workdir, env=env, capture_output=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]!r}\n{done.stderr[-2000:]!r}")


def classify(channels: Iterable[Channel], slack: FakeSlack, expected: str, refusals: Refusals) -> None:
    """Each channel's state from the bot's latest message there: reply, busy, other, or still going."""
    latest: dict[str, Any] = {}
    for message in slack.messages.values():
        if message.bot_id and (
            message.channel not in latest or float(message.ts) > float(latest[message.channel].ts)
        ):
            latest[message.channel] = message
    for channel in channels:
        shown = latest.get(channel.id)
        if shown is None:
            continue
        text = shown.shown
        channel.text = text
        if shown.streaming:
            channel.kind = "writing"
        elif text.startswith(expected):  # a sources line may follow the streamed answer
            channel.kind = "reply"
        elif refusals.is_busy(text):
            channel.kind = "busy"
        else:
            channel.kind = "other"


def timings(channels: Iterable[Channel], slack: FakeSlack, since: int) -> dict[str, int]:
    """First and last shown call per channel, from the fake's log of Web API calls; the methods counted."""
    by_id = {c.id: c for c in channels}
    methods: dict[str, int] = {}
    for call in slack.calls[since:]:
        methods[call.method] = methods.get(call.method, 0) + 1
        if call.method not in _SHOWN or call.status != 200 or call.error:
            continue
        channel = by_id.get(str(call.params.get("channel", "")))
        if channel is None:
            continue
        if call.method in _FIRST and channel.first_at is None:
            channel.first_at = call.at
        channel.last_at = call.at
    return methods


async def measure(
    run: Run,
    channels: list[Channel],
    slack: FakeSlack,
    llm: FakeOpenAI,
    bot: Any,
    profile: LLMProfile,
    refusals: Refusals,
    cap: int,
    time_limit: float,
) -> Result:
    expected = profile.text()
    since, chats_before = len(slack.calls), len(llm.chat_requests)
    llm.reset_peak()
    cpu_before, driver_before, started = bot.cpu(), time.process_time(), time.monotonic()
    for batch in rounds(channels, run.n):
        for i, channel in enumerate(batch):
            channel.sent_at = time.monotonic()
            text = load_bench.message_text(QUESTION, i)
            await slack.send_envelope(rq.app_mention(text, user=channel.user, channel=channel.id))
        await wait_until_settled(
            batch, slack, llm, expected, refusals, deadline=started + time_limit, classify=classify
        )
    elapsed = time.monotonic() - started
    cpu_after, driver_cpu = bot.cpu(), time.process_time() - driver_before
    methods = timings(channels, slack, since)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return result_of(
        run,
        cap,
        channels,
        llm,
        calls=len(slack.calls) - since,
        cpu=cpu,
        elapsed=elapsed,
        driver_cpu=driver_cpu,
        routes=methods,
        chats_before=chats_before,
    )


async def warm_up(slack: FakeSlack, llm: FakeOpenAI, profile: LLMProfile, refusals: Refusals) -> None:
    """One turn through the fresh process (imports, pools, first connections), not measured."""
    channel = Channel("C0WARMUP", "U0WARMUP")
    await slack.send_envelope(rq.app_mention(QUESTION.format(i="w"), user=channel.user, channel=channel.id))
    await wait_until_settled(
        [channel], slack, llm, profile.text(), refusals, deadline=time.monotonic() + 30, classify=classify
    )
    if channel.kind != "reply":
        raise RuntimeError(f"warm-up turn got no reply ({channel.kind}: {channel.text!r})")


async def bench(
    plan: list[Run],
    profile: LLMProfile,
    workdir: Path,
    *,
    redis_url: str | None = None,
    time_limit: float = 90.0,
    idle_seconds: float = 0.0,
) -> Outcome:
    """Run ``plan`` (one bot process per cap): one Result per Run, and the shipped bot's idle CPU."""
    server = None
    if redis_url is None:
        server = RedisServer(workdir / "redis", tcp=True, appendonly=False)
        await asyncio.to_thread(server.start)
        redis_url = server.url
    refusals = Refusals(BOT)
    shipped_cap = load_bot(BOT).config.limits.max_concurrent_per_workspace
    results: dict[int, Result] = {}
    idle: Idle | None = None
    try:
        async with FakeSlack() as slack, FakeOpenAI() as llm:
            llm.responder = lambda body: profile.reply()
            channels = {
                id(run): [Channel(f"C{k:02d}L{i:04d}", f"U{k:02d}L{i:04d}") for i in range(run.users)]
                for k, run in enumerate(plan)
            }
            env = slack_env(redis_url, llm, slack, workdir)
            for cap in dict.fromkeys(run.cap for run in plan):
                await _flush(redis_url)  # each bot process starts on an empty Redis ...
                await prepare(env, workdir)  # ... with the knowledge base indexed
                name = "shipped" if cap is None else f"cap-{cap}"
                prof = profile_path("slack", name)
                async with running_bot(
                    env,
                    workdir / name,
                    cap,
                    bot=BOT,
                    ready_event="slack_socket_connected",
                    profile_to=prof,
                ) as bot:
                    await slack.wait_for(lambda: slack.socket_connections >= 1, 15)
                    await warm_up(slack, llm, profile, refusals)
                    bot.start_profile()
                    done, at_rest = await measure_runs(
                        [r for r in plan if r.cap == cap],
                        measure,
                        (slack, llm, bot, profile, refusals),
                        channels,
                        cap if cap is not None else shipped_cap,
                        time_limit,
                        idle_seconds if cap is None else 0,
                        lambda: len(slack.calls),
                        tag=" (slack)",
                    )
                    results.update(done)
                    idle = at_rest or idle
                if prof is not None:
                    print_profile(prof)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
    return Outcome([results[id(run)] for run in plan], idle)


def report(results: list[Result], profile: LLMProfile, idle: Idle | None) -> str:
    spec = load_bot(BOT)
    slack = spec.platform_config("slack")
    cap = spec.config.limits.max_concurrent_per_workspace
    lines = [
        "Parley load benchmark, Slack: N users mention support at once, one channel each, one workspace",
        f"fake LLM: first token {profile.first_token * 1000:.0f} ms, {profile.tokens_per_s:g} tokens/s, "
        f"{profile.reply_tokens} tokens per reply",
        f"support as shipped: max_concurrent_per_workspace={cap}, "
        f"moderation {spec.config.moderation.profile}, knowledge base (hybrid, embedded model), MCP tools, "
        "Socket Mode, "
        f"streaming={slack.get('streaming', 'auto')}, edit_interval={slack.get('edit_interval', 1.0):g} s",
        "bot: its own process (parley run: Slack adapter + Redis queue + worker; its MCP tools server a "
        "child); this process: fake Slack + fake LLM + the driver; redis-server: its own process",
        "CPU: /proc/<pid>/stat user+system time of the bot process; times over answered turns only",
        load_line(),
        "",
        *table(results, "Slack/r"),
        *idle_line(idle),
        "",
        "Targets (issue 25; figures, not assertions):",
        *targets(results, SLACK_TARGETS, idle),
        "",
        "first: the envelope sent -> the bot's first chat.startStream/postMessage in that channel; whole: ->",
        "its last stream/post/update call there. Slack/r: every Web API call the fake saw over the run /",
        "replies. asked p50: the round's first envelope sent -> the fake model got a chat request.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, profile: LLMProfile) -> dict[str, Any]:
    """``load_bench --platform slack``: run, print the table, return the JSON payload."""
    plan = default_plan(args.sizes, False)  # the cap run is the Discord variant's
    with tempfile.TemporaryDirectory(prefix="parley-load-slack-") as tmp:
        outcome = asyncio.run(
            bench(plan, profile, Path(tmp), time_limit=args.time_limit, idle_seconds=args.idle_seconds)
        )
    print(report(outcome.results, profile, outcome.idle), flush=True)
    return {
        "one_reply_s": one_reply_time(outcome.results),
        "results": [asdict(r) for r in outcome.results],
        "idle": None if outcome.idle is None else asdict(outcome.idle),
    }
