"""The bot process of the load bench: ``parley run --bot arcade`` (the same ``bots.cli`` code path: the
Discord adapter and a queue worker in one process), optionally with ``max_concurrent_per_workspace`` changed
on a copy of the shipped config.

Settings come from the environment only (no ``.env``: the bench runs it in a scratch directory).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import os
import signal
import sys
import time

from bots.cli_commands import run as _run
from bots.loader import load_bot
from core.appsettings import load_app_settings
from core.bot import BotSpec
from core.errors import ParleyError
from core.logging import configure_logging


def with_cap(spec: BotSpec, cap: int | None) -> BotSpec:
    """``spec`` with at most ``cap`` generations at once per guild (None: as shipped)."""
    if cap is None:
        return spec
    limits = spec.config.limits.model_copy(update={"max_concurrent_per_workspace": cap})
    return dataclasses.replace(spec, config=spec.config.model_copy(update={"limits": limits}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bot", default="arcade")
    parser.add_argument(
        "--cap", type=int, default=None, help="max_concurrent_per_workspace (default: shipped)"
    )
    parser.add_argument("--workers-only", action="store_true", help="a worker process of the bench's bot")
    args = parser.parse_args()
    try:
        app = load_app_settings()
        configure_logging(app.core)
        spec = with_cap(load_bot(args.bot), args.cap)
        run_args = argparse.Namespace(platform=None, workers_only=args.workers_only, adapters_only=False)
        # PARLEY_WORKER_PROCESSES: the worker processes run this module too (the same cap)
        workers_argv = [sys.executable, "-m", "tests.bench.load_bot", "--bot", args.bot, "--workers-only"]
        if args.cap is not None:
            workers_argv += ["--cap", str(args.cap)]
        profile_to = os.environ.get("BENCH_PROFILE")  # a path: cProfile the bot, stats written there
        if not profile_to or args.workers_only:  # (the main process only)
            return asyncio.run(_run(run_args, app, spec, workers_argv=workers_argv))
        # CPU time, not wall time (waiting in epoll costs nothing), from SIGUSR1 on: the bench sends it after
        # the warm-up turn, so start-up imports stay out of the profile.
        profiler = cProfile.Profile(time.process_time)
        signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
        try:
            return asyncio.run(_run(run_args, app, spec, workers_argv=workers_argv))
        finally:
            profiler.disable()
            profiler.dump_stats(profile_to)
    except ParleyError as exc:
        print(f"load bench bot: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
