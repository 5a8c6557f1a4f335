"""What ``parley chat``, ``check``, ``run`` and ``rotate-credentials`` do. Imported by ``bots.cli`` only once
a command is parsed: the engine, openai and the platform adapters load here, never for ``parley --help``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncGenerator, Callable
from contextlib import AsyncExitStack

from adapters.common.deps import EdgeDeps
from adapters.common.platform import LoadedPlatform, Platform
from adapters.console.chat import ConsoleChat, ConsoleOptions
from bots import kb_cli
from core.appsettings import AppSettings
from core.bot import BotSpec
from core.console.mount import mount_console
from core.errors import ConfigError, LLMError, StoreUnavailable
from core.llm import ChatMessage, LLMEnd, LLMEvent, LLMRequest
from core.ops.processes import WorkerProcesses
from core.ops.service import Servable, serve
from core.runtime import NO_LLM, Runtime, open_runtime
from core.safety.mask import mask_text, mask_url
from core.tools.setup import open_tools, plugin_tools
from core.types import Place


def _slack(bot: BotSpec) -> LoadedPlatform:
    import adapters.slack as module  # imported on demand: a Discord-only bot never loads slack-bolt

    return Platform("slack", module, bot)


def _discord(bot: BotSpec) -> LoadedPlatform:
    import adapters.discord as module  # and a Slack-only bot never loads discord.py

    return Platform("discord", module, bot)


# mypy checks each module against adapters.common.platform.PlatformModule where it is passed to Platform.
# The names are also bots.cli.PLATFORM_NAMES (the parser's choices, without importing this module).
PLATFORMS: dict[str, Callable[[BotSpec], LoadedPlatform]] = {"slack": _slack, "discord": _discord}


def links(platforms: list[LoadedPlatform]) -> dict[str, Callable[[Place], str]]:
    """Each platform's ``link_for``: how the console opens a conversation in it (core knows no URLs)."""
    return {platform.name: platform.link_for for platform in platforms}


async def chat(args: argparse.Namespace, app: AppSettings, spec: BotSpec) -> int:
    settings = app.core
    async with open_runtime(spec, app) as rt:
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


async def check(app: AppSettings, spec: BotSpec) -> int:
    settings = app.core
    problems: list[str] = []
    print(f"bot {spec.name}: config ok ({len(spec.personas)} personas: {', '.join(sorted(spec.personas))})")
    if not settings.llm_configured:
        problems.append(NO_LLM)
    if spec.config.kb is not None:
        problems.extend(await kb_cli.check_embeddings(settings, app.embeddings))
    try:
        llm = None if settings.llm_configured else _NullLLM()
        async with open_runtime(spec, app, llm=llm) as rt:
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


async def rotate(app: AppSettings, spec: BotSpec) -> int:
    """Re-seal what the platforms keep for long (Slack's OAuth installations) under the newest credential
    key; short-lived values (response_urls, interaction tokens) expire on their own."""
    box = app.core.credential_box()
    if not box.enabled:
        raise ConfigError("PARLEY_CREDENTIALS_KEYS is not set: there is no key to re-seal credentials with")
    slack = None
    if "slack" in spec.config.platforms:
        import adapters.slack  # only a Slack bot loads slack-bolt

        slack = adapters.slack.load_settings(spec).settings  # read once, before anything is opened
    async with open_runtime(spec, app, llm=_NullLLM()) as rt:
        if slack is not None:
            print(await adapters.slack.rotate_credentials(rt.redis, rt.keys, box, slack))
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


def worker_argv(args: argparse.Namespace) -> list[str]:
    """How this ``parley run`` starts its extra worker processes: the same bot and platforms, workers only."""
    platforms = [arg for name in args.platform or () for arg in ("--platform", name)]
    return [sys.executable, "-m", "bots", "run", "--bot", str(args.bot), "--workers-only", *platforms]


async def run(
    args: argparse.Namespace, app: AppSettings, spec: BotSpec, *, workers_argv: list[str] | None = None
) -> int:
    """Adapters and queue workers in one process by default; ``--workers-only`` / ``--adapters-only`` split
    them. Every platform's Delivery (how workers show its replies) is registered in every mode, so a
    workers-only process can answer every platform. With ``PARLEY_WORKER_PROCESSES`` = N > 1 this process
    also starts and supervises N - 1 worker processes (``workers_argv``, default :func:`worker_argv`)."""
    settings = app.core
    names = args.platform or spec.config.platforms
    if not names:
        raise ConfigError(f"{spec.folder / 'bot.toml'}: platforms: empty, nothing to run")
    if args.workers_only and not settings.parley_queue:
        raise ConfigError("--workers-only needs the turn queue: PARLEY_QUEUE is false")
    extra = settings.parley_worker_processes - 1
    if extra and not settings.parley_queue:
        raise ConfigError("PARLEY_WORKER_PROCESSES > 1 needs the turn queue: PARLEY_QUEUE is false")
    for name in names:
        if name not in PLATFORMS:
            raise ConfigError(f"platforms: unknown platform {name!r} (known: {', '.join(PLATFORMS)})")
    platforms = [PLATFORMS[name](spec) for name in names]  # each platform's settings, read once
    app = app.with_platforms({platform.name: platform.settings for platform in platforms})
    async with open_runtime(spec, app) as rt:
        # /console on the ops server when PARLEY_CONSOLE_PASSWORD is set
        await mount_console(rt, links(platforms))
        deps = EdgeDeps.of(rt)
        adapters: list[tuple[str, Servable]] = []
        for platform in platforms:
            rt.ops.deliveries.register(platform.name, platform.delivery(deps))
            if not args.workers_only:
                adapters.append((platform.name, platform.adapter(deps)))
        processes = None
        if extra:
            argv = workers_argv or worker_argv(args)
            processes = WorkerProcesses(argv, extra, ops_port=settings.parley_ops_port)
        workers = settings.parley_queue and not args.adapters_only
        return await serve(rt, adapters, workers=workers, processes=processes)
