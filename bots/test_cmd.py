"""``parley test --bot NAME``: the CLI side of conversation tests (bots/convtest)."""

from __future__ import annotations

import argparse
import sys

from core.appsettings import AppSettings
from core.bot import BotSpec
from core.errors import ConfigError


async def run(args: argparse.Namespace, app: AppSettings, spec: BotSpec) -> int:
    from bots.convtest.runner import junit_xml, run_tests, summarise  # the engine: only when testing

    runs = args.runs if args.runs is not None else (3 if args.live else 1)
    rate = args.min_pass_rate if args.min_pass_rate is not None else (0.8 if args.live else 1.0)
    settings = app.core
    if runs < 1 or not 0 < rate <= 1:
        raise ConfigError("test: --runs must be at least 1 and --min-pass-rate in (0, 1]")
    if args.live and not settings.llm_configured:
        raise ConfigError("test --live: no model configured (OPENAI_API_KEY or OPENAI_BASE_URL)")
    mode = "live: the configured model" if args.live else "scripted model, local moderation rules"
    print(f"# {spec.name}: conversation tests ({mode}); logs in {settings.parley_data_dir / 'test.log'}")
    results = await run_tests(spec, app, live=args.live, runs=runs, only=args.only, out=sys.stdout)
    if args.junit is not None:
        args.junit.write_text(junit_xml(spec.name, results, rate), encoding="utf-8")
    return summarise(results, rate, sys.stdout)
