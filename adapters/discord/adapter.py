"""The Discord adapter's gateway side: discord.py events in, turns out to the dispatcher.

    gateway event --(on_message / on_interaction)--> pure translation -> Turn
        -> owned task: [open a thread] [defer within 3 s] -> Route -> deps.dispatcher.dispatch(turn, route)
    durable queue -> a worker (this process or another) -> engine.reply -> DiscordDelivery (REST only)

- One ``discord.AutoShardedClient`` (automatic sharding, or ``DISCORD_SHARD_IDS`` / ``DISCORD_SHARD_COUNT``).
- Intents: guilds, guild messages, DMs; ``message_content`` only when configured (it is privileged).
- Slash commands come from the engine's command registry; they are registered (to a development guild, or
  globally) only when their fingerprint differs from the one kept in Redis.
- Accepting an event runs in a task owned by the adapter; a failure is logged with its conversation and
  never reaches discord.py or the other turns (house rules 7 and 8). The reply itself is the worker's.
- A failed login or gateway connection is retried with exponential back-off; the failure count lives in Redis
  so a crash-looping process slows down too (Discord resets a token after 1,000 IDENTIFYs a day). A token
  Discord rejects, or intents it refuses, stop the adapter with one clear :class:`ConfigError` line.
- No conversation state is kept here: what a second replica would need is in Redis (the queued turn and its
  route, the interaction token, memory, the command hash).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import aiohttp
import discord
import structlog
from redis.exceptions import RedisError
from structlog.typing import FilteringBoundLogger

from adapters.common.deps import EdgeDeps
from adapters.discord import endpoints
from adapters.discord.commands import args_options, command_definitions, definitions_hash, option_name
from adapters.discord.confirm import call_from_custom_id, turn_from_tool_click
from adapters.discord.permissions import TypedCommandGate, typed_refusal
from adapters.discord.route import (
    ChannelTarget,
    InteractionTarget,
    Origin,
    Target,
    interaction_token_key,
    route_for,
)
from adapters.discord.settings import DiscordSettings
from adapters.discord.sink import NO_MENTIONS
from adapters.discord.translate import (
    MessagePolicy,
    interaction_view,
    message_view,
    story_vote,
    thread_name,
    turn_from_interaction,
    turn_from_message,
)
from core.clicks import pending_of, vote_call
from core.errors import ConfigError, ParleyError, StoreError
from core.ops.shards import ShardLeases
from core.tasks import TaskOwner
from core.types import Place, Turn

log = structlog.get_logger("parley.discord")

COMMAND_HASH_TTL = 7 * 86_400  # re-register at least weekly, in case someone edited commands by hand
FAILURES_TTL = 3_600  # a failure streak is forgotten after an hour without failures

_FATAL_CLOSE_CODES = {
    4004: "Discord rejected DISCORD_TOKEN (authentication failed)",
    4010: "invalid shard: check DISCORD_SHARD_IDS / DISCORD_SHARD_COUNT",
    4011: "this bot needs sharding: unset DISCORD_SHARD_COUNT or raise it",
    4012: "invalid gateway API version",
    4013: "Discord rejected the requested intents",
}
_RETRYABLE = (
    discord.HTTPException,
    discord.GatewayNotFound,
    discord.ConnectionClosed,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)


def build_intents(settings: DiscordSettings) -> discord.Intents:
    """Only what the bot reads: guilds (channels, threads), guild messages, DMs; content when opted in."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = settings.wants_message_content
    return intents


def backoff_delay(failures: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential back-off with jitter: about base * 2**(failures-1), capped, never below half of it."""
    if failures <= 0:
        return 0.0
    delay = min(cap, base * 2.0 ** min(failures - 1, 30))
    return delay / 2 + rng() * delay / 2


def _origin(guild: discord.Guild | None, channel: object, channel_id: int, message_id: int | None) -> Origin:
    """Where the user asked, with the names moderators read (from discord.py's cache; empty if unknown)."""
    name = getattr(channel, "name", None)  # DMs and uncached channels have none
    return Origin(
        channel_id=channel_id,
        message_id=message_id,
        guild_name=guild.name if guild is not None else "",
        channel_name=name if isinstance(name, str) else "",
    )


class _Client(discord.AutoShardedClient):
    """discord.py's client, with its event hooks routed to the adapter."""

    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        super().__init__(**options)
        self._adapter = adapter

    async def setup_hook(self) -> None:
        await self._adapter._after_login(self)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        await self._adapter._identify_slot(shard_id, initial=initial)

    async def on_ready(self) -> None:
        await self._adapter._on_ready(self)

    async def on_message(self, message: discord.Message) -> None:
        self._adapter._on_message(message)

    async def on_interaction(self, interaction: discord.Interaction[discord.Client]) -> None:
        self._adapter._on_interaction(interaction)

    async def on_raw_app_command_permissions_update(
        self, payload: discord.RawAppCommandPermissionsUpdateEvent
    ) -> None:
        await self._adapter._typed.changed(payload.guild.id)


class DiscordAdapter:
    """Serve one bot on Discord until cancelled. ``async with`` it, or call :meth:`aclose` when done."""

    def __init__(self, deps: EdgeDeps, settings: DiscordSettings) -> None:
        if settings.token is None:
            raise ConfigError("DISCORD_TOKEN is not set (the bot token from the Developer Portal, Bot page)")
        self._deps = deps
        self._settings = settings
        self._box = deps.box  # interaction tokens are sealed in Redis
        self._tasks = TaskOwner(f"discord:{deps.bot.name}")
        self._client: _Client | None = None
        self._policy: MessagePolicy | None = None
        self._closed = False
        self._failures_key = deps.keys.scoped("discord", "login_failures")
        self._max_concurrency = 1
        self._recommended_shards = 1
        self._leases: ShardLeases | None = None
        self._joined = False
        if settings.shard_leases:
            self._leases = ShardLeases(
                deps.redis,
                deps.keys,
                owner=f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}",
                lease=settings.shard_lease,
                heartbeat=settings.shard_heartbeat,
            )
        registry = deps.commands
        self._command_names = {option_name(c.name): c.name for c in registry}
        self._args_options = args_options(registry)
        self._typed = TypedCommandGate(deps.redis, deps.keys, dev_guild_id=settings.dev_guild_id)
        self.ready = asyncio.Event()  # set once every shard is connected (for tests and health checks)
        self.log = log.bind(bot=deps.bot.name)

    @property
    def client(self) -> discord.Client | None:
        return self._client

    @property
    def settings(self) -> DiscordSettings:
        return self._settings

    async def __aenter__(self) -> DiscordAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ lifecycle

    def _new_client(self) -> _Client:
        s = self._settings
        return _Client(
            self,
            intents=build_intents(s),
            shard_count=s.shard_count,
            shard_ids=sorted(s.shard_ids) or None,
            allowed_mentions=discord.AllowedMentions.none(),  # the default for every send, too
            max_messages=None,  # no message cache: replies carry the message they answer
            member_cache_flags=discord.MemberCacheFlags.none(),
            chunk_guilds_at_startup=False,
            guild_ready_timeout=s.guild_ready_timeout,
            enable_debug_events=False,
        )

    async def serve(self) -> None:
        """Log in and serve until cancelled; retry with back-off; raise ConfigError for what won't heal."""
        if self._closed:
            raise RuntimeError("DiscordAdapter is closed")
        s = self._settings
        assert s.token is not None
        endpoints.use_api(s.api_url)
        failures = await self._failures()
        while not self._closed:
            if failures:
                delay = backoff_delay(failures, s.login_backoff_base, s.login_backoff_max)
                self.log.warning("discord_backoff", failures=failures, retry_in=round(delay, 2))
                await asyncio.sleep(delay)
            client = self._client = self._new_client()
            try:
                await client.login(s.token.get_secret_value())
                if self._leases is not None:
                    if await self._run_leased(client, self._leases):
                        self.ready.clear()
                        continue  # the leased set changed: connect again with the new one
                else:
                    await client.connect(reconnect=True)
                if client.is_closed():
                    return  # closed on purpose (aclose)
            except discord.LoginFailure:
                raise ConfigError("DISCORD_TOKEN: Discord rejected the token (401 Unauthorized)") from None
            except discord.PrivilegedIntentsRequired:
                raise ConfigError(
                    "Discord refused the message-content intent: enable 'Message Content Intent' on the "
                    "Developer Portal's Bot page, or unset DISCORD_MESSAGE_CONTENT and "
                    "DISCORD_LISTEN_CHANNELS"
                ) from None
            except discord.ConnectionClosed as exc:
                if exc.code in _FATAL_CLOSE_CODES:
                    raise ConfigError(f"Discord gateway: {_FATAL_CLOSE_CODES[exc.code]}") from None
                failures = await self._failed(exc)
            except _RETRYABLE as exc:
                failures = await self._failed(exc)
            except asyncio.CancelledError:
                raise  # aclose() closes the client after the running replies had their grace period
            except BaseException:
                await client.close()
                raise
            if not self._closed:
                await client.close()
                self.ready.clear()

    async def _run_leased(self, client: _Client, leases: ShardLeases) -> bool:
        """Run the shards this replica leases. True (the client closed, to reconnect with the new set) when
        the set changes, e.g. when a dead replica's shards come free; False when the connection ended."""
        total = self._settings.shard_count or self._recommended_shards
        held: frozenset[int] = frozenset()
        if not self._joined:  # join first: replicas started together see each other and split evenly
            await leases.tick(total, claim=False)
            await asyncio.sleep(leases.heartbeat)
            self._joined = True
        held = await leases.tick(total)
        for _ in itertools.count():  # every shard taken: wait for one to come free (polls Redis)
            if held:
                break
            await asyncio.sleep(leases.heartbeat)
            held = await leases.tick(total)
        client.shard_ids = sorted(held)
        client.shard_count = total
        self.log.info("discord_shards_leased", shards=sorted(held), of=total)
        connect = asyncio.create_task(client.connect(reconnect=True), name="discord:connect")
        try:
            while True:
                done, _ = await asyncio.wait({connect}, timeout=leases.heartbeat)
                if done:
                    connect.result()
                    return False
                try:
                    now = await leases.tick(total)
                except StoreError as exc:  # keep serving; the lease runs out only after shard_lease
                    self.log.warning("discord_shard_lease_failed", error=str(exc))
                    continue
                if now != held:
                    self.log.info("discord_shards_changed", shards=sorted(now), had=sorted(held), of=total)
                    return True
        finally:
            if not connect.done():
                await client.close()
                await asyncio.wait({connect})

    async def _failures(self) -> int:
        try:
            return int(await self._deps.redis.get(self._failures_key) or 0)
        except (RedisError, ValueError):
            return 0

    async def _failed(self, exc: BaseException) -> int:
        self.log.warning("discord_connection_failed", error=type(exc).__name__, detail=str(exc)[:200])
        try:
            async with self._deps.redis.pipeline(transaction=True) as pipe:
                pipe.incr(self._failures_key)
                pipe.expire(self._failures_key, FAILURES_TTL)
                count, _ = await pipe.execute()
            return int(count)
        except RedisError:
            return 1

    async def aclose(self) -> None:
        """Let running replies finish (up to ``shutdown_grace`` seconds), then disconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._tasks.aclose(grace=self._settings.shutdown_grace)
        if self._client is not None:
            await self._client.close()
        if self._leases is not None:  # the others take this replica's shards on their next tick
            try:
                await self._leases.leave()
            except StoreError as exc:
                self.log.warning("discord_shard_leave_failed", error=str(exc))
        self.ready.clear()

    # ------------------------------------------------------------------ discord.py hooks

    async def _after_login(self, client: _Client) -> None:
        if self._settings.api_overridden:
            url = await endpoints.use_gateway_of(client)
            self.log.info("discord_gateway", url=url)
        await self._check_session_budget(client)
        if self._settings.sync_commands:
            await self.sync_commands(client)

    async def _check_session_budget(self, client: _Client) -> None:
        """Read Discord's IDENTIFY budget; wait for its reset rather than spend the last starts."""
        recommended, _url, limits = await client.http.get_bot_gateway()
        self._recommended_shards = max(1, int(recommended))
        self._max_concurrency = max(1, int(limits.get("max_concurrency", 1)))
        remaining, reset_ms = int(limits["remaining"]), int(limits["reset_after"])
        needed = len(self._settings.shard_ids) or self._settings.shard_count or recommended
        if remaining < 100:
            self.log.warning("discord_identify_budget_low", remaining=remaining, reset_in_s=reset_ms // 1000)
        if remaining < needed:
            self.log.error(
                "discord_identify_budget_exhausted", remaining=remaining, reset_in_s=reset_ms // 1000
            )
            await asyncio.sleep(reset_ms / 1000)

    async def _identify_slot(self, shard_id: int | None, *, initial: bool) -> None:
        """Wait for this shard's IDENTIFY slot: Discord allows one per rate-limit bucket (shard_id %
        max_concurrency) per 5 s. The slot is a Redis key, so every process of this bot (replicas, shards
        split across processes) shares the limit."""
        bucket = (shard_id or 0) % self._max_concurrency
        key = self._deps.keys.scoped("discord", "identify", str(bucket))
        try:
            window_ms = int(self._settings.identify_window * 1000)
            while not await self._deps.redis.set(key, str(shard_id or 0), nx=True, px=window_ms):
                wait_ms = await self._deps.redis.pttl(key)
                await asyncio.sleep(max(50, wait_ms) / 1000)
        except RedisError as exc:
            self.log.warning("discord_identify_gate_unavailable", error=str(exc))
            if not initial:
                await asyncio.sleep(self._settings.identify_window)  # discord.py's own default

    async def _on_ready(self, client: _Client) -> None:
        user = client.user
        assert user is not None
        self._policy = MessagePolicy(
            bot_id=str(user.id),
            ignore_bots=self._settings.ignore_bots,
            allowed_bots=frozenset(map(str, self._settings.allowed_bots)),
            follow_threads=frozenset(map(str, self._settings.follow_threads)),
            listen_channels=frozenset(map(str, self._settings.listen_channels)),
        )
        try:
            await self._deps.redis.delete(self._failures_key)
        except RedisError as exc:
            self.log.warning("discord_failures_reset_failed", error=str(exc))
        self.log.info(
            "discord_ready",
            user=str(user),
            guilds=len(client.guilds),
            shards=client.shard_count,
            message_content=client.intents.message_content,
        )
        self.ready.set()

    def _on_message(self, message: discord.Message) -> None:
        client, policy = self._client, self._policy
        if client is None or client.user is None:
            return
        if policy is None:  # a message before on_ready (guilds still streaming in)
            policy = MessagePolicy(bot_id=str(client.user.id), ignore_bots=self._settings.ignore_bots)
        turn = turn_from_message(message_view(message, client.user.id), policy)
        if turn is not None:
            self._spawn(self._accept_message(message, turn), turn, "message")

    def _on_interaction(self, interaction: discord.Interaction[discord.Client]) -> None:
        if interaction.type is discord.InteractionType.component:
            data: Mapping[str, object] = interaction.data or {}
            call = call_from_custom_id(str(data.get("custom_id", "")))
            if call is not None:
                turn = turn_from_tool_click(interaction_view(interaction), call)
                self._spawn(self._accept_tool_click(interaction, turn), turn, "tool")
            else:
                self._on_click(interaction)  # a story vote (or nothing of ours)
            return
        if interaction.type is not discord.InteractionType.application_command:
            return
        received = time.time()
        view = interaction_view(interaction)
        name = self._command_names.get(view.command, view.command)
        turn = turn_from_interaction(
            dataclasses.replace(view, command=name), args_option=self._args_options.get(view.command)
        )
        self._spawn(self._accept_interaction(interaction, turn, received), turn, "interaction")

    def _on_click(self, interaction: discord.Interaction[discord.Client]) -> None:
        """A story choice's button: ``/story <n>`` for its story and round (a vote, answered privately; a
        button of a closed round or another story changes nothing)."""
        data: Mapping[str, object] = interaction.data or {}
        choice = story_vote(str(data.get("custom_id", "")))
        if choice is None or "story" not in self._deps.commands:
            return
        received = time.time()
        call = vote_call(choice)
        options = (("prompt", call.args), *call.options.items())
        view = dataclasses.replace(interaction_view(interaction), command="story", options=options)
        turn = turn_from_interaction(view, args_option="prompt")
        self._spawn(self._accept_interaction(interaction, turn, received, private=True), turn, "click")

    def _spawn(self, coro: Coroutine[Any, Any, None], turn: Turn, kind: str) -> None:
        try:
            self._tasks.spawn(coro, name=f"discord:{kind}:{turn.event_id}")
        except RuntimeError:  # closing: no new turns
            coro.close()

    # ------------------------------------------------------------------ turns: accept, then dispatch

    def _context(self, turn: Turn) -> dict[str, str]:
        return {
            "conversation": turn.place.conversation_id,
            "turn_id": turn.turn_id,
            "event_id": turn.event_id,
        }

    async def _dispatch(self, turn: Turn, target: Target, tlog: FilteringBoundLogger) -> None:
        """Hand the turn to the engine's dispatcher: the durable queue (any worker answers it through
        :class:`~adapters.discord.delivery.DiscordDelivery`), or this process when the queue is off."""
        dispatched = await self._deps.dispatcher.dispatch(turn, route_for(target))
        tlog.debug("discord_turn_dispatched", outcome=dispatched.outcome.value, reason=dispatched.reason)

    async def _accept_message(self, message: discord.Message, turn: Turn) -> None:
        tlog = self.log.bind(**self._context(turn))
        try:
            guild_id = message.guild.id if message.guild is not None else None
            if guild_id is not None and await self._typed_refused(message, turn, guild_id, tlog):
                return
            origin = _origin(message.guild, message.channel, message.channel.id, message.id)
            target = ChannelTarget(message.channel.id, guild_id, message.id, turn.addressed, origin)
            if self._opens_thread(message, turn):
                thread = await self._open_thread(message, turn, tlog)
                if thread is not None:
                    place = turn.place
                    turn = dataclasses.replace(
                        turn, place=Place(place.platform, place.workspace, place.channel, str(thread.id))
                    )
                    target = ChannelTarget(thread.id, guild_id, None, typing=True, origin=origin)
            await self._dispatch(turn, target, tlog)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary: one turn's failure never stops the bot
            tlog.exception("discord_turn_failed", error=type(exc).__name__)

    async def _typed_refused(
        self, message: discord.Message, turn: Turn, guild_id: int, tlog: FilteringBoundLogger
    ) -> bool:
        """A typed ``/command`` an admin restricted in this guild (adapters/discord/permissions.py) is
        answered with a pointer to the slash command, and goes no further."""
        call = self._deps.commands.parse(turn.text) if turn.text.startswith("/") else None
        if call is None or self._client is None:
            return False
        name = option_name(call.name)
        restricted = await self._typed.restricted(self._client, guild_id)
        if restricted is not None and name not in restricted:
            return False
        tlog.info("discord_typed_command_refused", command=name, known=restricted is not None)
        await message.reply(
            typed_refusal(name),
            allowed_mentions=NO_MENTIONS,
            mention_author=False,
            suppress_embeds=True,
        )
        return True

    def _opens_thread(self, message: discord.Message, turn: Turn) -> bool:
        return (
            self._settings.open_threads
            and turn.addressed
            and turn.command is None
            and isinstance(message.channel, discord.TextChannel)
            and not turn.text.startswith("/")
        )

    async def _open_thread(
        self, message: discord.Message, turn: Turn, tlog: FilteringBoundLogger
    ) -> discord.Thread | None:
        try:
            return await message.create_thread(name=thread_name(turn.text), auto_archive_duration=1440)
        except discord.HTTPException as exc:
            tlog.warning("discord_thread_failed", status=exc.status, code=exc.code, detail=exc.text[:200])
            return None

    async def _accept_interaction(
        self,
        interaction: discord.Interaction[discord.Client],
        turn: Turn,
        received: float,
        *,
        private: bool = False,
    ) -> None:
        tlog = self.log.bind(**self._context(turn), command=turn.command.name if turn.command else "")
        command = self._deps.commands.get(turn.command.name) if turn.command else None
        ephemeral = private or bool(command and command.ephemeral)
        try:
            # First, within Discord's 3 s: the user sees "thinking..." while the turn waits for a worker.
            response = await interaction.response.defer(thinking=True, ephemeral=ephemeral)
        except discord.HTTPException as exc:
            tlog.warning("discord_defer_failed", status=exc.status, code=exc.code, detail=exc.text[:200])
            return
        try:
            original_id = response.message_id if response is not None else None
            if original_id is None:
                original_id = (await interaction.original_response()).id
            s = self._settings
            ttl = int(s.interaction_token_ttl) + 1
            key = interaction_token_key(self._deps.keys, interaction.id)
            try:
                await self._deps.redis.set(key, self._box.seal(interaction.token), ex=ttl)
            except RedisError as exc:  # the reply will go to the channel instead of the response
                tlog.warning("interaction_token_not_stored", error=str(exc))
            target = InteractionTarget(
                interaction_id=interaction.id,
                application_id=interaction.application_id,
                original_id=original_id,
                channel_id=interaction.channel_id or 0,
                guild_id=interaction.guild_id,
                deadline=received + s.interaction_token_ttl - s.interaction_margin,
                ephemeral=ephemeral,
                origin=_origin(interaction.guild, interaction.channel, interaction.channel_id or 0, None),
            )
            await self._dispatch(turn, target, tlog)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary
            tlog.exception("discord_turn_failed", error=type(exc).__name__)

    async def _accept_tool_click(self, interaction: discord.Interaction[discord.Client], turn: Turn) -> None:
        """Someone else's click, or one on an answered question, is told why in an ephemeral answer and
        goes no further (the buttons stay for the right person). The asker's click takes the buttons off
        (Discord's "update message" answer, within its 3 s), then is answered in the channel."""
        tlog = self.log.bind(**self._context(turn))
        pending_id = pending_of(turn.command)[1] if turn.command is not None else ""
        try:
            check = self._deps.click_refusal
            refusal = await check(pending_id, turn) if check is not None else ""
        except (ParleyError, RedisError) as exc:
            tlog.warning("discord_tool_owner_unknown", error=type(exc).__name__)
            refusal = ""  # the core checks again when it resumes the call
        try:
            if refusal:
                await interaction.response.send_message(refusal, ephemeral=True, suppress_embeds=True)
                tlog.info("discord_tool_click_refused")
                return
            await interaction.response.edit_message(view=None)  # answered: the buttons go
        except discord.HTTPException as exc:
            tlog.warning("discord_tool_click_ack_failed", status=exc.status, code=exc.code)
            if refusal:
                return
        try:
            origin = _origin(interaction.guild, interaction.channel, interaction.channel_id or 0, None)
            target = ChannelTarget(interaction.channel_id or 0, interaction.guild_id, None, True, origin)
            await self._dispatch(turn, target, tlog)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary
            tlog.exception("discord_turn_failed", error=type(exc).__name__)

    # ------------------------------------------------------------------ commands

    async def sync_commands(self, client: discord.Client) -> bool:
        """Register the slash commands if their definitions changed; True when Discord was called."""
        app_id = client.application_id
        assert app_id is not None
        definitions = command_definitions(
            self._deps.commands, admin_names=self._deps.bot.config.admin_commands
        )
        guild = self._settings.dev_guild_id
        scope = f"guild:{guild}" if guild else "global"
        digest = definitions_hash(definitions, scope)
        key = self._deps.keys.scoped("discord", "commands", str(app_id), scope)
        if await self._deps.redis.get(key) == digest:
            self.log.info("discord_commands_unchanged", scope=scope, count=len(definitions))
            return False
        try:
            if guild:
                await client.http.bulk_upsert_guild_commands(app_id, guild, definitions)
            else:
                await client.http.bulk_upsert_global_commands(app_id, definitions)
        except discord.Forbidden:
            raise ConfigError(
                f"DISCORD_DEV_GUILD_ID: cannot register commands in guild {guild}: is the bot in it, invited "
                "with the applications.commands scope?"
                if guild
                else "Discord refused to register slash commands (403)"
            ) from None
        except discord.HTTPException as exc:
            self.log.error(
                "discord_commands_sync_failed", scope=scope, status=exc.status, detail=exc.text[:200]
            )
            return True
        await self._deps.redis.set(key, digest, ex=COMMAND_HASH_TTL)
        self.log.info("discord_commands_synced", scope=scope, count=len(definitions))
        return True
