"""Everything a running bot shares: settings, the bot's definition, Redis, the LLM, the engine, task owner.

:func:`open_runtime` is the one place that builds them, checks that Redis answers (fail loudly at
start-up, house rule 5) and closes them again in reverse order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from core.appsettings import AppSettings
from core.bot import BotSpec
from core.builtins import builtin_registry, forget_command
from core.console.stats import DailyStats, build_stats
from core.engine import Engine, Features
from core.errors import ConfigError, StoreUnavailable
from core.kb.retrieve import KnowledgeBase
from core.kb.setup import open_knowledge_base
from core.keys import KeySpace
from core.llm import LLM, OpenAILLM
from core.media.setup import Media, build_media
from core.memory import RedisMemory
from core.ops.deferred import DeferredWrites
from core.ops.delivery import Deliveries, Dispatcher
from core.ops.jobs import Route
from core.ops.redisconn import RedisTarget, settings_target
from core.ops.redisconn import connect as connect_redis
from core.ops.stack import Ops, build_ops
from core.redis_server import RedisServer
from core.safety.limits import SCRIPTS as LIMIT_SCRIPTS
from core.safety.limits import SHAS as LIMIT_SHAS
from core.safety.setup import Safety, open_safety
from core.settings import Settings
from core.starts import Starts
from core.story import StoryClock, StoryStore
from core.tasks import TaskOwner
from core.tokens import TokenCounter
from core.tools.setup import Tools, check_allowed, open_tools, plugin_tools
from core.types import Turn

log = structlog.get_logger("parley.runtime")

NO_LLM = (
    "no LLM configured: set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL (any OpenAI-compatible server, "
    "e.g. a local Ollama at http://localhost:11434/v1, vLLM or llama.cpp server) in the environment or .env"
)


@dataclass
class Runtime:
    app: AppSettings  # every area's settings, read once by the CLI (core/appsettings.py)
    bot: BotSpec
    redis: aioredis.Redis
    llm: LLM
    engine: Engine
    tasks: TaskOwner
    keys: KeySpace
    ops: Ops  # metrics, health server, locks, queue, Deliveries (core/ops)
    dispatcher: Dispatcher  # adapters: await rt.dispatcher.dispatch(turn, route)
    safety: Safety  # moderation chain, redactor, admission, event log (core/safety)
    tools: Tools | None = None  # function tools and MCP servers (core/tools); None: the bot has none
    stats: DailyStats | None = None  # the operator console's daily aggregates (core/console)
    knowledge: KnowledgeBase | None = None  # the knowledge base (core/kb), when the bot has one
    media: Media | None = None  # images in (vision) and out (/imagine)

    @property
    def settings(self) -> Settings:
        """The process settings (LLM, Redis, queue, ops): ``app.core``."""
        return self.app.core


def story_route(deliveries: Deliveries, turn: Turn) -> Route:
    """Where a story's next part is shown: the platform Delivery's ``story_route(turn)`` if it has one (a
    channel message rather than a spent interaction), else a plain route."""
    make = getattr(deliveries.get(turn.place.platform), "story_route", None)
    route = make(turn) if make is not None else None
    return route if isinstance(route, Route) else Route(turn.place.platform)


async def ping(client: aioredis.Redis, what: str) -> None:
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"cannot reach Redis at {what}: {type(exc).__name__}: {exc}") from None


@asynccontextmanager
async def open_runtime(
    spec: BotSpec,
    app: AppSettings,
    *,
    llm: LLM | None = None,
    redis: aioredis.Redis | None = None,
) -> AsyncIterator[Runtime]:
    """Build a bot's runtime from ``app``, every area's settings as the CLI read them (nothing here reads
    the environment). ``redis`` is a client the caller owns (it must use ``decode_responses=True``); by
    default one is made from REDIS_URL, or an embedded redis-server is started."""
    if not isinstance(app, AppSettings):  # the old signature took the process Settings alone
        raise TypeError(f"open_runtime needs AppSettings (core/appsettings.py), not {type(app).__name__}")
    settings = app.core
    if llm is None and not settings.llm_configured:
        raise ConfigError(NO_LLM)
    async with AsyncExitStack() as stack:
        url: str | RedisTarget
        if redis is not None:
            url, where = "", "the given client"
        elif (target := settings_target(settings)) is not None:
            url, where = target, "REDIS_URL"
        else:
            server = RedisServer(settings.parley_data_dir / "redis")
            await asyncio.to_thread(server.start)
            stack.callback(server.stop)
            url, where = server.url, f"embedded redis-server ({server.data_dir})"
        if redis is not None:
            client = redis
        else:
            # Standalone, Sentinel or Cluster, from the URL's scheme (or REDIS_SENTINELS).
            connection = connect_redis(url, failover_wait=settings.parley_redis_failover_wait)
            stack.push_async_callback(connection.aclose)
            client = connection.client
            if connection.target.kind != "standalone":
                where = str(connection.target)
        await ping(client, where)
        warm = settings.parley_redis_warm_connections
        if redis is None and isinstance(client, aioredis.Redis) and warm > 1:
            # At once: each PING holds a pooled connection meanwhile, so the pool opens that many.
            await asyncio.gather(*(ping(client, where) for _ in range(warm)))

        keys = KeySpace(spec.name)
        ops = build_ops(spec, settings, client, keys)
        stack.push_async_callback(ops.aclose)
        if llm is None:
            llm = ops.wrap_llm(OpenAILLM(settings))  # metered, behind the circuit breaker
        stack.push_async_callback(llm.aclose)

        cfg = spec.config
        if cfg.default_persona not in spec.personas:
            raise ConfigError(
                f"{spec.folder / 'bot.toml'}: default_persona: no persona named {cfg.default_persona!r} "
                f"(have {', '.join(sorted(spec.personas)) or 'none'})"
            )
        deferred = DeferredWrites(client, scripts=LIMIT_SCRIPTS.values())  # used on a cluster only
        memory = RedisMemory(
            client,
            keys,
            max_messages=cfg.memory.max_messages,
            ttl_seconds=int(cfg.memory.ttl_days * 86_400),
            deferred=deferred,
        )
        await memory.load_scripts()
        stack.push_async_callback(memory.aclose)  # deferred riders are sent before the client closes
        # Moderation chain, redactor, limits, canary: a bad rule or profile is a ConfigError here.
        safety = await stack.enter_async_context(open_safety(spec, settings, client, keys, app.safety))
        stack.push_async_callback(safety.moderator.aclose)
        deferred.listen(LIMIT_SHAS["quota"], safety.admission.quota_view.learn)  # stored-bytes totals
        registry = builtin_registry(cfg.commands)
        if cfg.privacy.forget_command:
            registry.add(forget_command(safety.forget))
        for command in safety.commands():
            registry.add(command)
        if spec.plugin is not None:
            for command in spec.plugin.commands():
                registry.add(command)
        deliveries = ops.deliveries

        def image_auth(platform: str) -> object | None:  # the Delivery: ImageAuth and/or ImageSource
            return deliveries.get(platform) if platform in deliveries else None

        media = build_media(
            spec, settings, safety.moderator, image_auth, safety.admission.store, client, keys
        )
        stack.push_async_callback(media.aclose)
        for command in media.commands(cfg.commands):
            registry.add(command)
        # Tools: the plugin's functions and the MCP servers, started now and stopped after the dispatcher.
        tools: Tools | None = None
        declared = plugin_tools(spec)
        servers = cfg.tools.mcp if settings.parley_mcp else []
        if cfg.tools.enabled and (declared or servers):
            tools = await stack.enter_async_context(
                open_tools(
                    cfg.tools.model_copy(update={"mcp": servers}),
                    llm,
                    client,
                    keys,
                    tools=declared,
                    events=safety.events,
                    metrics=ops.metrics,
                    redact=safety.redactor.redact,
                    redact_before_llm=safety.redact_before_llm,
                    signing_keys=settings.parley_credentials_keys,
                    moderator=safety.moderator,
                )
            )
            for command in tools.commands():
                registry.add(command)
        unsure = await check_allowed(cfg.tools, tools, str(spec.folder / "bot.toml"))
        if unsure:
            log.warning("tools_not_provided_yet", tools=unsure, why="an MCP server is not answering")
        tasks = TaskOwner(f"bot:{spec.name}")
        stack.push_async_callback(tasks.aclose, 5.0)
        stats = build_stats(client, keys, spec, settings, app.console)
        # The knowledge base ([kb] or a knowledge file): loads the published index, polls for new versions.
        knowledge = await stack.enter_async_context(
            open_knowledge_base(spec, settings, client, keys, app.embeddings)
        )
        story = StoryStore(client, keys, ttl_seconds=int(cfg.memory.ttl_days * 86_400))
        engine = Engine(
            bot=spec,
            memory=memory,
            llm=llm,
            safety=safety,
            commands=registry,
            tasks=tasks,
            counter=TokenCounter(settings.openai_model),
            default_model=settings.openai_model,
            metrics=ops.metrics,
            features=Features(tools=tools, stats=stats, knowledge=knowledge, media=media, story=story),
            starts=Starts(settings.parley_turn_starts),
        )
        if tools is not None:
            tools.loop.control = engine  # a tool may pause the conversation (support's handoff)
        dispatcher = Dispatcher(
            engine,
            spec,
            ops.deliveries,
            ops.queue,
            ops.locks,
            ops.metrics,
            max_direct=settings.parley_direct_max,
        )
        stack.push_async_callback(dispatcher.aclose, settings.parley_shutdown_grace)
        if cfg.story.branching:  # vote windows close here or on any other replica, whichever is first
            clock = StoryClock(
                story, dispatcher.dispatch, partial(story_route, deliveries), deliveries.__contains__
            )
            clocks = TaskOwner(f"story:{spec.name}")  # closed before the dispatcher it hands turns to
            stack.push_async_callback(clocks.aclose)
            clocks.spawn(clock.run(), name="story-clock")
        yield Runtime(
            app,
            spec,
            client,
            llm,
            engine,
            tasks,
            keys,
            ops,
            dispatcher,
            safety,
            tools,
            stats,
            knowledge,
            media,
        )
