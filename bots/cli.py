"""``parley`` (also ``python -m bots``): chat, check and run bots.

Exit codes: 0 fine, 1 a check failed, 2 bad configuration, 3 Redis unreachable, 4 LLM unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from dotenv import dotenv_values

from adapters.common.deps import EdgeDeps
from adapters.common.platform import LoadedPlatform, Platform
from adapters.console.chat import ConsoleChat, ConsoleOptions
from bots import config_cmd, console_cmd, kb_cli, scaffold, test_cmd
from bots.loader import available_bots, load_bot
from core.bot import BotSpec
from core.console.mount import mount_console
from core.console.settings import ConsoleSettings, load_console_settings
from core.errors import ConfigError, LLMError, ParleyError, StoreUnavailable
from core.llm import ChatMessage, LLMEnd, LLMEvent, LLMRequest
from core.logging import configure_logging
from core.ops.service import Servable, serve
from core.runtime import NO_LLM, Runtime, open_runtime
from core.safety.mask import mask_text, mask_url
from core.safety.settings import SafetySettings, load_safety_settings
from core.settings import Settings, load_settings
from core.tools.setup import open_tools, plugin_tools


def _slack(bot: BotSpec) -> LoadedPlatform:
    import adapters.slack as module  # imported on demand: a Discord-only bot never loads slack-bolt

    return Platform("slack", module, bot)


def _discord(bot: BotSpec) -> LoadedPlatform:
    import adapters.discord as module  # and a Slack-only bot never loads discord.py

    return Platform("discord", module, bot)


# mypy checks each module against adapters.common.platform.PlatformModule where it is passed to Platform.
PLATFORMS: dict[str, Callable[[BotSpec], LoadedPlatform]] = {"slack": _slack, "discord": _discord}


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
    run.add_argument("--platform", action="append", choices=sorted(PLATFORMS), help="only these platforms")
    split = run.add_mutually_exclusive_group()
    split.add_argument(
        "--workers-only", action="store_true", help="answer queued turns only (no platform connections)"
    )
    split.add_argument("--adapters-only", action="store_true", help="take platform events only (no workers)")
    console = sub.add_parser(
        "console", help="serve the operator console alone, or manage its accounts (console user ...)"
    )
    console.add_argument("--bot", help=f"bot name or folder ({bots})")
    console_cmd.add_user_parser(console, bots)
    rotate = sub.add_parser(
        "rotate-credentials", help="re-seal stored credentials under the first PARLEY_CREDENTIALS_KEYS key"
    )
    rotate.add_argument("--bot", required=True, help=f"bot name or folder ({bots})")
    kb_cli.add_parser(sub, bots)
    scaffold.add_parser(sub)
    test_cmd.add_parser(sub, bots)
    config_cmd.add_parser(sub, bots)
    return parser


def _fail(message: str, code: int) -> int:
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
    return {**{k: v for k, v in dotenv_values(".env").items() if v is not None}, **os.environ}


def _dispatch(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    try:
        if args.command == "new":
            return scaffold.run(args)
        settings = load_settings()
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
        safety = load_safety_settings()
        console = load_console_settings()
        environ = _environ()
        spec = load_bot(args.bot, environ=environ)
        if args.command == "config":
            return config_cmd.run(args, spec, environ)
        if args.command == "test":
            return asyncio.run(test_cmd.run(args, settings, safety, spec))
        if args.command == "chat":
            return asyncio.run(_chat(args, settings, safety, spec))
        if args.command == "kb":
            return asyncio.run(kb_cli.run(args, settings, spec))
        if args.command == "check":
            return asyncio.run(_check(settings, safety, spec))
        if args.command == "console" and getattr(args, "console_command", None) == "user":
            return asyncio.run(console_cmd.manage_users(args, settings, spec))
        if args.command == "console":
            return asyncio.run(console_cmd.serve_console(settings, console, spec))
        if args.command == "rotate-credentials":
            return asyncio.run(_rotate(settings, safety, spec))
        return asyncio.run(_run(args, settings, safety, console, spec))
    except ParleyError as exc:
        return _report(exc)
    except KeyboardInterrupt:
        return 130


async def _chat(args: argparse.Namespace, settings: Settings, safety: SafetySettings, spec: BotSpec) -> int:
    async with open_runtime(spec, settings, safety_settings=safety) as rt:
        options = ConsoleOptions(
            user_id=args.user,
            user_name=args.name or spec.config.console.get("user_name", "You"),
            jsonl=args.jsonl,
            interactive=sys.stdin.isatty() and not args.jsonl,
            conversation=args.conversation,
            files_dir=settings.parley_data_dir / "files",
            audio=args.audio,
        )
        return await ConsoleChat(rt.bot, rt.engine.reply, options).serve()


async def _check(settings: Settings, safety: SafetySettings, spec: BotSpec) -> int:
    problems: list[str] = []
    print(f"bot {spec.name}: config ok ({len(spec.personas)} personas: {', '.join(sorted(spec.personas))})")
    if not settings.llm_configured:
        problems.append(NO_LLM)
    if spec.config.kb is not None:
        problems.extend(await kb_cli.check_embeddings(settings))
    try:
        llm = None if settings.llm_configured else _NullLLM()
        async with open_runtime(spec, settings, llm=llm, safety_settings=safety) as rt:
            print("redis: ok")
            if settings.llm_configured:
                await _probe_llm(rt, problems)
            if rt.safety is not None:
                problems.extend(await rt.safety.check())
            problems.extend(await _check_tools(rt))
            deps = EdgeDeps.of(rt)
            for name in spec.config.platforms:
                try:
                    platform = PLATFORMS[name](spec)
                except ConfigError as exc:  # a bad setting is a problem to report, like a bad token
                    problems.append(f"{name}: {exc}")
                    continue
                problems.extend(await platform.check(deps))
    except StoreUnavailable as exc:
        problems.append(str(exc))
    for problem in problems:
        print(f"problem: {mask_text(problem)}", file=sys.stderr)
    return 1 if problems else 0


async def _check_tools(rt: Runtime) -> list[str]:
    """List the bot's tools and probe its MCP servers (the runtime's own, or started here for the check)."""
    cfg = rt.bot.config.tools
    if not cfg.enabled:
        print("tools: off")
        return []
    async with AsyncExitStack() as stack:
        tools = rt.tools
        if tools is None:  # MCP servers switched off (PARLEY_MCP=false): still list and probe them here
            tools = await stack.enter_async_context(
                open_tools(cfg, rt.llm, rt.redis, rt.keys, tools=plugin_tools(rt.bot))
            )
        lines, problems = await tools.check()
    for line in lines or ["tools: none"]:
        print(line)
    return problems


async def _rotate(settings: Settings, safety: SafetySettings, spec: BotSpec) -> int:
    """Re-seal what the platforms keep for long (Slack's OAuth installations) under the newest credential
    key; short-lived values (response_urls, interaction tokens) expire on their own."""
    box = settings.credential_box()
    if not box.enabled:
        raise ConfigError("PARLEY_CREDENTIALS_KEYS is not set: there is no key to re-seal credentials with")
    async with open_runtime(spec, settings, llm=_NullLLM(), safety_settings=safety) as rt:
        if "slack" in spec.config.platforms:
            from adapters.slack import rotate_credentials  # only a Slack bot loads slack-bolt

            print(await rotate_credentials(rt.redis, rt.keys, box))
    return 0


async def _probe_llm(rt: Runtime, problems: list[str]) -> None:
    request = LLMRequest([ChatMessage("user", "Reply with the word: ok")], rt.settings.openai_model, 0, 5)
    try:
        async for event in rt.llm.stream(request):
            if isinstance(event, LLMEnd):
                print(f"llm: ok (model {rt.settings.openai_model})")
    except LLMError as exc:
        problems.append(f"LLM at {mask_url(rt.settings.openai_base_url or 'api.openai.com')}: {exc}")


class _NullLLM:
    """Stands in when no LLM is configured, so `check` can still test Redis and the platforms."""

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        raise LLMError(NO_LLM)
        yield  # noqa: V201 - unreachable on purpose: makes this an async generator

    async def aclose(self) -> None:
        return None


async def _run(
    args: argparse.Namespace,
    settings: Settings,
    safety: SafetySettings,
    console: ConsoleSettings,
    spec: BotSpec,
) -> int:
    """Adapters and queue workers in one process by default; ``--workers-only`` / ``--adapters-only`` split
    them. Every platform's Delivery (how workers show its replies) is registered in every mode, so a
    workers-only process can answer every platform."""
    names = args.platform or spec.config.platforms
    if not names:
        raise ConfigError(f"{spec.folder / 'bot.toml'}: platforms: empty, nothing to run")
    if args.workers_only and not settings.parley_queue:
        raise ConfigError("--workers-only needs the turn queue: PARLEY_QUEUE is false")
    for name in names:
        if name not in PLATFORMS:
            raise ConfigError(f"platforms: unknown platform {name!r} (known: {', '.join(PLATFORMS)})")
    platforms = [PLATFORMS[name](spec) for name in names]  # each platform's settings, read once
    async with open_runtime(spec, settings, safety_settings=safety, console_settings=console) as rt:
        await mount_console(rt, console)  # /console on the ops server when PARLEY_CONSOLE_PASSWORD is set
        deps = EdgeDeps.of(rt)
        adapters: list[tuple[str, Servable]] = []
        for platform in platforms:
            rt.ops.deliveries.register(platform.name, platform.delivery(deps))
            if not args.workers_only:
                adapters.append((platform.name, platform.adapter(deps)))
        return await serve(rt, adapters, workers=settings.parley_queue and not args.adapters_only)


if __name__ == "__main__":
    raise SystemExit(main())
