"""``parley`` (also ``python -m bots``): chat, check and run bots.

Exit codes: 0 fine, 1 a check failed, 2 bad configuration, 3 Redis unreachable, 4 LLM unreachable.

This module parses and dispatches only: each command's module (and with it the engine, openai, the adapters
or the knowledge base stack) is imported once the command is known, so ``parley --help`` and a bad argument
answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bots import scaffold
from bots.folders import available_bots
from core.errors import ConfigError, LLMError, ParleyError, StoreUnavailable

# bots.cli_commands.PLATFORMS has one loader per name (tests/core/test_cli.py checks they agree).
PLATFORM_NAMES = ("discord", "slack")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description="LLM chatbots for Slack and Discord")
    sub = parser.add_subparsers(dest="command", required=True)
    bots = ", ".join(available_bots())
    chat = sub.add_parser("chat", help="chat with a bot in the terminal")
    chat.add_argument("--bot", required=True, help=f"bot name or folder ({bots})")
    chat.add_argument("--user", default="local-user", help="who speaks (user id; memory is per user)")
    chat.add_argument("--name", default=None, help="display name of the speaker")
    chat.add_argument("--conversation", default="default", help="conversation id (a thread, in effect)")
    chat.add_argument("--jsonl", action="store_true", help="print one JSON object per reply")
    chat.add_argument("--audio", type=Path, default=None, help="send this audio clip first (transcribed)")
    check = sub.add_parser("check", help="validate config and reach Redis and the LLM")
    check.add_argument("--bot", required=True, help=f"bot name or folder ({bots})")
    run = sub.add_parser("run", help="run a bot on its platforms")
    run.add_argument("--bot", required=True, help=f"bot name or folder ({bots})")
    run.add_argument(
        "--platform", action="append", choices=sorted(PLATFORM_NAMES), help="only these platforms"
    )
    split = run.add_mutually_exclusive_group()
    split.add_argument(
        "--workers-only", action="store_true", help="answer queued turns only (no platform connections)"
    )
    split.add_argument("--adapters-only", action="store_true", help="take platform events only (no workers)")
    console = sub.add_parser(
        "console", help="serve the operator console alone, or manage its accounts (console user ...)"
    )
    console.add_argument("--bot", help=f"bot name or folder ({bots})")
    _console_user_parser(console, bots)
    rotate = sub.add_parser(
        "rotate-credentials", help="re-seal stored credentials under the first PARLEY_CREDENTIALS_KEYS key"
    )
    rotate.add_argument("--bot", required=True, help=f"bot name or folder ({bots})")
    _kb_parser(sub, bots)
    scaffold.add_parser(sub)
    _test_parser(sub, bots)
    _config_parser(sub, bots)
    return parser


def _kb_parser(sub: Any, bots: str) -> None:
    kb = sub.add_parser("kb", help="the knowledge base: ingest documents, search, status")
    kbsub = kb.add_subparsers(dest="kb_command", required=True)
    ing = kbsub.add_parser("ingest", help="index documents (folders, files, URLs, sitemaps)")
    ing.add_argument("--bot", required=True, help=f"bot name or folder ({bots})")
    ing.add_argument("paths", nargs="*", help="what to read (default: [kb] sources in bot.toml)")
    ing.add_argument("--collection", default="", help="file these documents under this collection")
    ing.add_argument(
        "--rebuild",
        action="store_true",
        help="re-read and re-embed everything (the old index serves until the new one is published)",
    )
    search = kbsub.add_parser("search", help="the ranked chunks for a question")
    search.add_argument("--bot", required=True, help=f"bot name or folder ({bots})")
    search.add_argument("question")
    search.add_argument("--channel", default="", help="search as this channel id (its collections)")
    search.add_argument("--json", action="store_true", help="print JSON")
    status = kbsub.add_parser("status", help="documents, chunks, last ingest, index size")
    status.add_argument("--bot", required=True, help=f"bot name or folder ({bots})")


def _console_user_parser(console: argparse.ArgumentParser, bots: str) -> None:
    """``parley console user ...`` (``--bot`` may also come after the subcommand)."""
    sub = console.add_subparsers(dest="console_command")
    user = sub.add_parser("user", help="manage the console's accounts")
    actions = user.add_subparsers(dest="user_command", required=True)
    add = actions.add_parser("add", help="create an account (asks for its password)")
    add.add_argument("name", help="account name: lowercase letters, digits, '.', '_' or '-'")
    add.add_argument("--role", default="agent", help="admin, agent (default) or viewer")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--replace", action="store_true", help="change an existing account's role and password")
    remove = actions.add_parser("remove", help="delete an account")
    remove.add_argument("name")
    listing = actions.add_parser("list", help="list the accounts")
    for parser in (add, remove, listing):
        parser.add_argument("--bot", default=argparse.SUPPRESS, help=f"bot name or folder ({bots})")


def _test_parser(sub: Any, bots: str) -> None:
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


def _config_parser(sub: Any, bots: str) -> None:
    config = sub.add_parser("config", help="print a bot's effective settings and where each came from")
    config.add_argument("--bot", required=True, help=f"bot name or folder ({bots})")
    config.add_argument("--json", action="store_true", help="one JSON object: {key: {value, source}}")


def _fail(message: str, code: int) -> int:
    from core.safety.mask import mask_text  # pydantic: not for --help

    print(f"parley: {mask_text(message)}", file=sys.stderr)
    return code


def _first_parley_error(group: BaseExceptionGroup[BaseException]) -> ParleyError | None:
    for exc in group.exceptions:
        if isinstance(exc, ParleyError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (inner := _first_parley_error(exc)) is not None:
            return inner
    return None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BaseExceptionGroup as group:
        # An adapter's start-up error surfaces from the TaskGroup wrapped in a group: report it plainly.
        error = _first_parley_error(group)
        if error is None:
            raise
        return _report(error)


def _report(exc: ParleyError) -> int:
    if isinstance(exc, ConfigError):
        return _fail(f"config error: {exc}", 2)
    if isinstance(exc, StoreUnavailable):
        return _fail(str(exc), 3)
    if isinstance(exc, LLMError):
        return _fail(f"LLM error: {exc}", 4)
    return _fail(str(exc), 1)


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "console" and not args.bot:
        parser.error("console: --bot NAME is required")
    with contextlib.ExitStack() as stack:
        return _dispatch(args, stack)


def _environ() -> dict[str, str]:
    """Where ``PARLEY_BOT__*`` overrides come from: ``.env`` (as for every other setting), then the process
    environment, which wins."""
    from dotenv import dotenv_values

    return {**{k: v for k, v in dotenv_values(".env").items() if v is not None}, **os.environ}


def _dispatch(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    try:
        if args.command == "new":
            return scaffold.run(args)
        return _command(args, stack)
    except ParleyError as exc:
        return _report(exc)
    except KeyboardInterrupt:
        return 130


def _command(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    # Imported here, once a command needs them (see the module's docstring).
    import asyncio

    from bots.loader import load_bot
    from core.appsettings import load_app_settings
    from core.logging import configure_logging

    # Every area's settings, read once here and passed down (core/appsettings.py); a platform's are added
    # by the commands that connect to one, once the bot (and its bot.toml tables) is known.
    app = load_app_settings()
    settings = app.core
    owns_terminal = args.command == "chat" and sys.stdin.isatty() and not args.jsonl
    if owns_terminal or args.command == "test":
        # An interactive chat owns the terminal, and a test run's report is what it prints: logs go to a
        # file beside the embedded Redis data.
        settings.parley_data_dir.mkdir(parents=True, exist_ok=True)
        log_file = stack.enter_context(
            (settings.parley_data_dir / f"{args.command}.log").open("a", encoding="utf-8")
        )
        configure_logging(settings, log_file)
    else:
        configure_logging(settings)
    environ = _environ()
    spec = load_bot(args.bot, environ=environ)
    if args.command == "config":
        from bots import config_cmd

        return config_cmd.run(args, spec, environ)
    if args.command == "test":
        from bots import test_cmd

        return asyncio.run(test_cmd.run(args, app, spec))
    if args.command == "kb":
        from bots import kb_cli

        return asyncio.run(kb_cli.run(args, app, spec))
    if args.command == "console":
        from bots import console_cmd

        if getattr(args, "console_command", None) == "user":
            return asyncio.run(console_cmd.manage_users(args, settings, spec))
        return asyncio.run(console_cmd.serve_console(app, spec))
    from bots import cli_commands

    if args.command == "chat":
        return asyncio.run(cli_commands.chat(args, app, spec))
    if args.command == "check":
        return asyncio.run(cli_commands.check(app, spec))
    if args.command == "rotate-credentials":
        return asyncio.run(cli_commands.rotate(app, spec))
    return asyncio.run(cli_commands.run(args, app, spec))


if __name__ == "__main__":
    raise SystemExit(main())
