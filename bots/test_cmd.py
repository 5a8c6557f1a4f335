"""``parley test --bot NAME``: the CLI side of conversation tests (bots/convtest)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core.bot import BotSpec
from core.errors import ConfigError
from core.safety.settings import SafetySettings
from core.settings import Settings


def add_parser(sub: Any, bots: str) -> None:
    test = sub.add_parser("test", help="run a bot's conversation tests (its tests/*.toml)")
    test.add_argument("--bot", required=True, help=f"bot name or folder ({bots})")
    test.add_argument("--live", action="store_true", help="ask the configured model instead of the scripts")
    test.add_argument("--runs", type=int, default=None, help="runs per case (default 1, with --live 3)")
    test.add_argument(
        "--min-pass-rate",
        type=float,
        default=None,
        help="share of runs each case must pass (default 1, live 0.8)",
    )
    test.add_argument("-k", dest="only", default="", help="only cases whose name contains this")
    test.add_argument("--junit", type=Path, default=None, help="also write a JUnit XML report here")


async def run(args: argparse.Namespace, settings: Settings, safety: SafetySettings, spec: BotSpec) -> int:
    from bots.convtest.runner import junit_xml, run_tests, summarise  # the engine: only when testing

    runs = args.runs if args.runs is not None else (3 if args.live else 1)
    rate = args.min_pass_rate if args.min_pass_rate is not None else (0.8 if args.live else 1.0)
    if runs < 1 or not 0 < rate <= 1:
        raise ConfigError("test: --runs must be at least 1 and --min-pass-rate in (0, 1]")
    if args.live and not settings.llm_configured:
        raise ConfigError("test --live: no model configured (OPENAI_API_KEY or OPENAI_BASE_URL)")
    mode = "live: the configured model" if args.live else "scripted model, local moderation rules"
    print(f"# {spec.name}: conversation tests ({mode}); logs in {settings.parley_data_dir / 'test.log'}")
    results = await run_tests(
        spec, settings, safety, live=args.live, runs=runs, only=args.only, out=sys.stdout
    )
    if args.junit is not None:
        args.junit.write_text(junit_xml(spec.name, results, rate), encoding="utf-8")
    return summarise(results, rate, sys.stdout)
