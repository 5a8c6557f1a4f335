"""Showing replies on Discord: the :class:`~core.ops.delivery.Delivery` for platform ``discord``.

A queue worker (in the gateway process or in a ``--workers-only`` one) hands it a job and the engine's
reply stream. It needs no gateway connection, only the REST API: a logged-in discord.py client for channel
messages and typing, and the interaction's webhook (token from Redis) for slash-command responses.

    ChannelTarget      typing... -> post (a reply to the user's message) -> paced edits -> overflow posts
    InteractionTarget  edit the deferred response -> paced edits -> follow-ups; the channel past the deadline

A flagged turn (``meta["flag"]`` in the engine's result, whatever its kind but IGNORED) is then reported
to the moderators' channel (``moderators_channel_id``) with :func:`~adapters.discord.notice.flag_notice`:
everything it needs is in the queued turn and its route, so any worker can write it.

Failures are logged with the conversation and never raised: the engine's turn still completes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar, cast

import aiohttp
import discord
import structlog
from redis.exceptions import RedisError
from structlog.typing import FilteringBoundLogger

from adapters.common.deps import EdgeDeps
from adapters.common.flags import WarnOnce, flag_report
from adapters.common.stream import StreamRenderer
from adapters.discord import endpoints
from adapters.discord.confirm import confirm_view
from adapters.discord.notice import flag_notice, origin_of
from adapters.discord.route import (
    ChannelTarget,
    InteractionTarget,
    Target,
    interaction_token_key,
    route_for,
    target_of,
)
from adapters.discord.settings import DiscordSettings
from adapters.discord.sink import NO_MENTIONS, ChannelSink, InteractionSink, Previews, keep_typing
from adapters.discord.translate import DM_WORKSPACE, STORY_BUTTON
from core.errors import ConfigError, CredentialError
from core.ops.jobs import Job, Route
from core.tools.setup import confirm_id
from core.types import ReplyDone, ReplyEvent, ReplyResult, Turn

if TYPE_CHECKING:
    from discord.types.webhook import Webhook as WebhookPayload

log = structlog.get_logger("parley.discord")
T = TypeVar("T")
APPLICATION_WEBHOOK = 3  # discord.WebhookType.application: may send ephemeral follow-ups


class DiscordDelivery:
    """Render reply streams onto Discord over REST. ``aclose()`` is idempotent."""

    def __init__(
        self, deps: EdgeDeps, settings: DiscordSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        if settings.token is None:
            raise ConfigError("DISCORD_TOKEN is not set (the bot token from the Developer Portal, Bot page)")
        self._deps = deps
        self._settings = settings
        self._box = deps.box
        self._clock = clock  # wall clock: deadlines are shared between processes
        self._client: discord.Client | None = None
        self._session: aiohttp.ClientSession | None = None
        self._login = asyncio.Lock()
        self._slots = asyncio.Semaphore(settings.max_concurrent_turns)
        self._closed = False
        self._warn_unrouted = WarnOnce()  # one delivery per process: "flags have nowhere to go" is said once
        # Personas whose replies may unfurl links (``link_previews``); every other reply is suppressed.
        self._previews = frozenset(n for n, p in deps.bot.personas.items() if p.link_previews)
        self.log = log.bind(bot=deps.bot.name)

    async def _rest(self) -> tuple[discord.Client, aiohttp.ClientSession]:
        """The REST client (logged in once, on first use) and the session for interaction webhooks."""
        async with self._login:
            if self._closed:
                raise RuntimeError("DiscordDelivery is closed")
            if self._client is None:
                token = self._settings.token
                assert token is not None
                endpoints.use_api(self._settings.api_url)
                # REST only: never connects to the gateway (the intents just keep discord.py's state quiet).
                client = discord.Client(
                    intents=discord.Intents(guilds=True), allowed_mentions=discord.AllowedMentions.none()
                )
                try:
                    await client.login(token.get_secret_value())
                except discord.LoginFailure:
                    await client.close()
                    raise ConfigError(
                        "DISCORD_TOKEN: Discord rejected the token (401 Unauthorized)"
                    ) from None
                except BaseException:
                    await client.close()
                    raise
                self._client = client
                self._session = aiohttp.ClientSession()
            assert self._session is not None
            return self._client, self._session

    async def deliver(self, job: Job, events: AsyncIterator[ReplyEvent]) -> None:
        turn = job.turn
        context = {
            "conversation": turn.place.conversation_id,
            "turn_id": turn.turn_id,
            "event_id": turn.event_id,
        }
        dlog = self.log.bind(**context)
        try:
            target = target_of(job.route)
            client, session = await self._rest()
            async with self._slots:
                if isinstance(target, ChannelTarget):
                    result = await self._to_channel(client, target, events, context, dlog)
                else:
                    result = await self._to_interaction(client, session, target, events, context, dlog)
                if result is not None:
                    await self._report_flag(client, job, target, result, dlog)
                if result is not None and (pending := confirm_id(result)):
                    await self._ask_confirm(client, target, pending, dlog)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary: a platform failure is logged, the turn goes on
            dlog.error("discord_delivery_failed", error=type(exc).__name__, detail=str(exc)[:200])

    async def _ask_confirm(
        self, client: discord.Client, target: Target, pending_id: str, dlog: FilteringBoundLogger
    ) -> None:
        """Confirm / cancel buttons under the question that shows a proposed call's exact arguments."""
        channel = client.get_partial_messageable(target.channel_id, guild_id=target.guild_id)
        try:
            await channel.send(
                "Confirm or cancel:",
                view=confirm_view(pending_id),
                allowed_mentions=NO_MENTIONS,
                suppress_embeds=True,
            )
        except discord.HTTPException as exc:
            dlog.error("discord_confirm_buttons_failed", status=exc.status, code=exc.code)

    async def _to_channel(
        self,
        client: discord.Client,
        target: ChannelTarget,
        events: AsyncIterator[ReplyEvent],
        context: dict[str, str],
        dlog: FilteringBoundLogger,
    ) -> ReplyResult | None:
        channel = client.get_partial_messageable(target.channel_id, guild_id=target.guild_id)
        reply_to = channel.get_partial_message(target.reply_to) if target.reply_to else None
        stop_typing = asyncio.Event()
        previews = Previews()
        sink = ChannelSink(channel, reply_to=reply_to, on_first_post=stop_typing.set, previews=previews)
        renderer = StreamRenderer(sink, min_interval=self._settings.edit_interval, log_context=context)
        async with asyncio.TaskGroup() as tg, _closing(self._watch_previews(events, previews)) as watched:
            if self._settings.typing and target.typing:
                tg.create_task(keep_typing(channel, stop_typing))
            try:
                outcome = await renderer.run(watched)
            finally:
                stop_typing.set()
        _log_outcome(dlog, outcome.failures, outcome.posts, outcome.edits)
        await _upload(sink, outcome.result, dlog)
        await _choices(channel, outcome.result, dlog)
        return outcome.result

    async def _to_interaction(
        self,
        client: discord.Client,
        session: aiohttp.ClientSession,
        target: InteractionTarget,
        events: AsyncIterator[ReplyEvent],
        context: dict[str, str],
        dlog: FilteringBoundLogger,
    ) -> ReplyResult | None:
        try:
            sealed = await self._deps.redis.get(interaction_token_key(self._deps.keys, target.interaction_id))
            token = self._box.open(sealed) if sealed else None
        except (RedisError, CredentialError) as exc:
            dlog.warning("interaction_token_unreadable", error=str(exc))
            token = None
        webhook = None
        if token:
            payload = {"id": target.application_id, "type": APPLICATION_WEBHOOK, "token": token}
            webhook = discord.Webhook(cast("WebhookPayload", payload), session=session)
        sink = InteractionSink(
            webhook,
            original_id=target.original_id,
            channel=client.get_partial_messageable(target.channel_id, guild_id=target.guild_id),
            deadline=target.deadline,
            ephemeral=target.ephemeral,
            clock=self._clock,
            log_context=context,
        )
        renderer = StreamRenderer(sink, min_interval=self._settings.edit_interval, log_context=context)
        watched_previews = self._watch_previews(events, sink.previews)
        async with _closing(_watch_ephemeral(watched_previews, sink)) as watched:
            outcome = await renderer.run(watched)
        if outcome.result is not None and not outcome.result.text and not outcome.handles:
            await sink.discard_original()  # nothing to say: don't leave "thinking..." forever
        _log_outcome(dlog, outcome.failures, outcome.posts, outcome.edits)
        await _upload(sink, outcome.result, dlog)
        channel = client.get_partial_messageable(target.channel_id, guild_id=target.guild_id)
        await _choices(channel, outcome.result, dlog)
        return outcome.result

    async def _watch_previews(
        self, events: AsyncIterator[ReplyEvent], previews: Previews
    ) -> AsyncIterator[ReplyEvent]:
        """Let the reply's links unfurl when the persona that answered opts in (``link_previews``): the
        final edit (or post) then goes out unwrapped and without SUPPRESS_EMBEDS."""
        async for event in events:
            if isinstance(event, ReplyDone) and event.result.persona in self._previews:
                previews.allowed = True
            yield event

    def story_route(self, turn: Turn) -> Route:
        """A story's next part goes to the channel (or thread) as a new message: the interaction that
        started it may be spent by then (core/runtime.py:story_route)."""
        place = turn.place
        guild = None if place.workspace == DM_WORKSPACE else int(place.workspace)
        return route_for(ChannelTarget(int(place.thread or place.channel), guild, None, typing=True))

    async def _report_flag(
        self,
        client: discord.Client,
        job: Job,
        target: Target,
        result: ReplyResult,
        dlog: FilteringBoundLogger,
    ) -> None:
        """Post the moderators' notice of a flagged turn; a refused post is logged, never raised."""
        report = flag_report(job.turn, result, self._deps.redact)
        if report is None:
            return
        category = report.category
        channel_id = self._settings.moderators_channel_id
        if channel_id is None:
            self._warn_unrouted(
                dlog,
                "discord_flags_unrouted",
                category=category,
                detail="flagged turns have nowhere to go: set DISCORD_MODERATORS_CHANNEL_ID "
                "(or moderators_channel_id in bot.toml [discord]); said once per process",
            )
            return
        text = flag_notice(report, guild_id=target.guild_id, origin=origin_of(target))
        channel = client.get_partial_messageable(channel_id)
        try:
            await channel.send(text, allowed_mentions=NO_MENTIONS, suppress_embeds=True)
        except discord.HTTPException as exc:  # 403: no access to the channel; 404: it was deleted
            dlog.warning(
                "discord_flag_notice_failed",
                category=category,
                moderators_channel=str(channel_id),
                status=exc.status,
                code=exc.code,
                detail=exc.text[:200],
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            dlog.warning(
                "discord_flag_notice_failed",
                category=category,
                moderators_channel=str(channel_id),
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )
        else:
            dlog.info("discord_flag_reported", category=category, moderators_channel=str(channel_id))

    async def aclose(self) -> None:
        async with self._login:
            if self._closed:
                return
            self._closed = True
            if self._session is not None:
                await self._session.close()
            if self._client is not None:
                await self._client.close()


async def _choices(
    channel: discord.abc.Messageable, result: ReplyResult | None, dlog: FilteringBoundLogger
) -> None:
    """A story part's choices as buttons under it (a click is a vote: adapters/discord/adapter.py)."""
    if result is None or not result.choices:
        return
    view = discord.ui.View(timeout=None)
    for choice in result.choices:
        round_, n, label = choice.split(":", 2)
        view.add_item(
            discord.ui.Button(
                label=f"{n}. {label}"[:80],
                custom_id=f"{STORY_BUTTON}{round_}:{n}",
                style=discord.ButtonStyle.primary,
            )
        )
    try:
        await channel.send(
            "Vote for what happens next:", view=view, allowed_mentions=NO_MENTIONS, suppress_embeds=True
        )
    except (discord.DiscordException, aiohttp.ClientError, OSError) as exc:
        dlog.warning("discord_choices_failed", error=type(exc).__name__, detail=str(exc)[:200])


async def _upload(
    sink: ChannelSink | InteractionSink, result: ReplyResult | None, dlog: FilteringBoundLogger
) -> None:
    """Upload the reply's files (``/imagine``'s picture); a refused upload is logged, never raised."""
    if result is None or not result.attachments:
        return
    try:
        await sink.upload(result.attachments)
    except (discord.DiscordException, aiohttp.ClientError, OSError) as exc:
        dlog.warning("discord_upload_failed", error=type(exc).__name__, detail=str(exc)[:200])
    else:
        dlog.info("discord_files_uploaded", files=[a.filename for a in result.attachments])


def _log_outcome(dlog: FilteringBoundLogger, failures: int, posts: int, edits: int) -> None:
    if failures:
        dlog.warning("discord_reply_incomplete", failures=failures, posts=posts, edits=edits)
    else:
        dlog.debug("discord_reply_delivered", posts=posts, edits=edits)


async def _watch_ephemeral(
    events: AsyncIterator[ReplyEvent], sink: InteractionSink
) -> AsyncIterator[ReplyEvent]:
    """Tell the sink when the engine decides, before anything was shown, that the answer is private."""
    async for event in events:
        if isinstance(event, ReplyDone) and event.result.ephemeral:
            sink.prefer_ephemeral()
        yield event


@asynccontextmanager
async def _closing(events: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """``contextlib.aclosing`` for any async iterator (finalise a wrapper generator even on cancel)."""
    try:
        yield events
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
