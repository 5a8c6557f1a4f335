"""Showing replies on Discord: the steps of :class:`~adapters.common.deliver.ReplyDelivery` for ``discord``.

A queue worker (in the gateway process or in a ``--workers-only`` one) hands it a job and the engine's
reply stream. It needs no gateway connection, only the REST API: a logged-in discord.py client for channel
messages and typing, and the interaction's webhook (token from Redis) for slash-command responses.

    text      ChannelTarget: typing... -> post (a reply to the user's message) -> paced edits -> overflow
              InteractionTarget: edit the deferred response -> paced edits -> follow-ups; the channel past
              the deadline
    files     uploaded beside the reply (a follow-up for an interaction)
    choices   vote buttons in the channel; remembered, so the next part or the end retires them
    confirm   confirm / cancel buttons under the question
    notices   private ones as ephemeral follow-ups (flag 64) where the reply answers an interaction
    handoff   a notice in the moderators' channel (``moderators_channel_id``), else in the conversation
    flag      the moderators' report (:func:`~adapters.discord.notice.flag_notice`), from the job alone

Failures are logged with the conversation and never raised: the engine's turn still completes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

import aiohttp
import discord
import structlog
from redis.exceptions import RedisError
from structlog.typing import FilteringBoundLogger

from adapters.common.controls import Controls
from adapters.common.deliver import HANDOFF_TEXT, ReplyDelivery, Shown
from adapters.common.deps import EdgeDeps
from adapters.common.flags import FlagReport
from adapters.common.split import split_text
from adapters.common.stream import StreamRenderer
from adapters.discord import endpoints
from adapters.discord.confirm import confirm_view
from adapters.discord.format import to_discord
from adapters.discord.notice import flag_notice, jump_url, origin_of
from adapters.discord.route import (
    ChannelTarget,
    InteractionTarget,
    Target,
    interaction_token_key,
    route_for,
    target_of,
)
from adapters.discord.settings import DiscordSettings
from adapters.discord.sink import (
    MESSAGE_LIMIT,
    NO_MENTIONS,
    ChannelSink,
    InteractionSink,
    Previews,
    keep_typing,
)
from adapters.discord.translate import DM_WORKSPACE, STORY_BUTTON
from core.errors import AdapterError, ConfigError, CredentialError
from core.media.fetch import ImageHosts
from core.ops.jobs import Job, Route
from core.types import Attachment, Choice, ConfirmRequest, Place, ReplyDone, ReplyEvent, Turn

if TYPE_CHECKING:
    from discord.types.webhook import Webhook as WebhookPayload

log = structlog.get_logger("parley.discord")
T = TypeVar("T")
APPLICATION_WEBHOOK = 3  # discord.WebhookType.application: may send ephemeral follow-ups


STORY = "story"  # the controls name of a story's vote buttons (ReplyResult.retire)
VOTES_CLOSED = "Voting on this part has closed."


@dataclass
class DiscordWhere:
    """The target step's answer; the text step adds the sink it wrote with (files follow the reply) and the
    interaction's webhook (private notices are its ephemeral follow-ups)."""

    client: discord.Client
    session: aiohttp.ClientSession
    target: Target
    dlog: FilteringBoundLogger
    sink: ChannelSink | InteractionSink | None = None
    webhook: discord.Webhook | None = None


class DiscordDelivery(ReplyDelivery[DiscordWhere]):
    """Render reply streams onto Discord over REST. ``aclose()`` is idempotent."""

    platform = "discord"

    def __init__(
        self, deps: EdgeDeps, settings: DiscordSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(redact=deps.redact)
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
        self.controls = Controls(
            deps.redis, deps.keys, ttl_seconds=int(deps.bot.config.memory.ttl_days * 86_400)
        )
        # Personas whose replies may unfurl links (``link_previews``); every other reply is suppressed.
        self._previews = frozenset(n for n, p in deps.bot.personas.items() if p.link_previews)
        self.log = log.bind(bot=deps.bot.name)

    def image_hosts(self) -> ImageHosts:
        """Where Discord serves attachments (core's ImageSource): its CDN over https, or the configured API
        host (a REST proxy, a test fake)."""
        return ImageHosts(("cdn.discordapp.com", "media.discordapp.net"), self._settings.api_url)

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
        async with self._slots:  # at most max_concurrent_turns replies at once, all their steps included
            await self.show(job, events)

    # ------------------------------------------------------------------ the steps

    async def target(self, job: Job) -> DiscordWhere:
        turn = job.turn
        target = target_of(job.route)
        client, session = await self._rest()
        dlog = self.log.bind(
            conversation=turn.place.conversation_id, turn_id=turn.turn_id, event_id=turn.event_id
        )
        return DiscordWhere(client, session, target, dlog)

    async def text(self, job: Job, target: DiscordWhere, events: AsyncIterator[ReplyEvent]) -> Shown:
        turn = job.turn
        context = {
            "conversation": turn.place.conversation_id,
            "turn_id": turn.turn_id,
            "event_id": turn.event_id,
        }
        if isinstance(target.target, ChannelTarget):
            return await self._to_channel(target, target.target, events, context)
        return await self._to_interaction(target, target.target, events, context)

    def _channel(self, where: DiscordWhere) -> discord.PartialMessageable:
        return where.client.get_partial_messageable(where.target.channel_id, guild_id=where.target.guild_id)

    async def say(self, job: Job, target: DiscordWhere, text: str, *, private: bool = False) -> None:
        """A line beside the reply; a private one is an ephemeral follow-up of the interaction (flag 64),
        and is not shown at all where there is none (a channel has no private place)."""
        if private:
            if target.webhook is None:
                target.dlog.info("discord_private_notice_not_shown", reason="no interaction")
                return
            await target.webhook.send(
                text, ephemeral=True, allowed_mentions=NO_MENTIONS, suppress_embeds=True
            )
            return
        await self._channel(target).send(text, allowed_mentions=NO_MENTIONS, suppress_embeds=True)

    async def files(
        self, job: Job, target: DiscordWhere, shown: Shown, files: tuple[Attachment, ...]
    ) -> None:
        if target.sink is not None:
            await _upload(target.sink, files, target.dlog)

    async def choices(
        self, job: Job, target: DiscordWhere, shown: Shown, choices: tuple[Choice, ...]
    ) -> None:
        posted = await _choices(self._channel(target), choices, target.dlog)
        if posted is not None:
            await self.controls.remember(job.turn.place, STORY, f"{posted.channel.id}:{posted.id}")

    async def confirm(self, job: Job, target: DiscordWhere, shown: Shown, question: ConfirmRequest) -> None:
        await self._ask_confirm(target.client, target.target, question.id, target.dlog)

    async def retire(self, job: Job, target: DiscordWhere, controls: tuple[str, ...]) -> None:
        """Take the vote buttons off a story's earlier parts (its round closed, or the story ended)."""
        if STORY not in controls:
            return
        for ref in await self.controls.take(job.turn.place, STORY):
            channel_id, _, message_id = ref.partition(":")
            if not (channel_id.isdigit() and message_id.isdigit()):
                continue
            message = target.client.get_partial_messageable(int(channel_id)).get_partial_message(
                int(message_id)
            )
            try:
                # No flags sent: Discord keeps the vote message's SUPPRESS_EMBEDS.
                await message.edit(content=VOTES_CLOSED, view=None, allowed_mentions=NO_MENTIONS)
            except (discord.DiscordException, aiohttp.ClientError, OSError) as exc:
                target.dlog.warning("discord_retire_failed", error=type(exc).__name__, detail=str(exc)[:200])

    async def handoff(self, job: Job, target: DiscordWhere, shown: Shown) -> None:
        """Tell the moderators' channel (the people who take over), with a link to the conversation; with
        none configured, say so in the conversation itself."""
        channel_id = self._settings.moderators_channel_id
        if channel_id is None:
            await self.say(job, target, HANDOFF_TEXT)
            return
        t = target.target
        origin = origin_of(t)
        who = job.turn.author.display_name or "someone"
        link = (
            jump_url(t.guild_id, origin.channel_id, origin.message_id)
            if origin.message_id is not None
            else f"<#{origin.channel_id}>"
        )
        text = (
            f"**Handoff:** {who} (user id {job.turn.author.id}) is waiting for a person: {link}. "
            "The bot stays quiet there until someone resumes it (/resume)."
        )
        channel = target.client.get_partial_messageable(channel_id)
        await channel.send(text, allowed_mentions=NO_MENTIONS, suppress_embeds=True)
        target.dlog.info("discord_handoff_notice", moderators_channel=str(channel_id))

    async def flag(self, job: Job, target: DiscordWhere, report: FlagReport) -> None:
        await self._report_flag(target.client, target.target, report, target.dlog)

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
        where: DiscordWhere,
        target: ChannelTarget,
        events: AsyncIterator[ReplyEvent],
        context: dict[str, str],
    ) -> Shown:
        channel = where.client.get_partial_messageable(target.channel_id, guild_id=target.guild_id)
        reply_to = channel.get_partial_message(target.reply_to) if target.reply_to else None
        stop_typing = asyncio.Event()
        previews = Previews()
        sink = ChannelSink(channel, reply_to=reply_to, on_first_post=stop_typing.set, previews=previews)
        where.sink = sink
        renderer = StreamRenderer(sink, min_interval=self._settings.edit_interval, log_context=context)
        async with asyncio.TaskGroup() as tg, _closing(self._watch_previews(events, previews)) as watched:
            if self._settings.typing and target.typing:
                tg.create_task(keep_typing(channel, stop_typing, after=self._settings.typing_after))
            try:
                outcome = await renderer.run(watched)
            finally:
                stop_typing.set()
        _log_outcome(where.dlog, outcome.failures, outcome.posts, outcome.edits)
        return Shown(outcome.result, _anchor(outcome.handles))

    async def _to_interaction(
        self,
        where: DiscordWhere,
        target: InteractionTarget,
        events: AsyncIterator[ReplyEvent],
        context: dict[str, str],
    ) -> Shown:
        client, session, dlog = where.client, where.session, where.dlog
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
        where.webhook = webhook
        sink = InteractionSink(
            webhook,
            original_id=target.original_id,
            channel=client.get_partial_messageable(target.channel_id, guild_id=target.guild_id),
            deadline=target.deadline,
            ephemeral=target.ephemeral,
            clock=self._clock,
            log_context=context,
        )
        where.sink = sink
        renderer = StreamRenderer(sink, min_interval=self._settings.edit_interval, log_context=context)
        watched_previews = self._watch_previews(events, sink.previews)
        async with _closing(_watch_ephemeral(watched_previews, sink)) as watched:
            outcome = await renderer.run(watched)
        if outcome.result is not None and not outcome.result.text and not outcome.handles:
            await sink.discard_original()  # nothing to say: don't leave "thinking..." forever
        _log_outcome(dlog, outcome.failures, outcome.posts, outcome.edits)
        return Shown(outcome.result, _anchor(outcome.handles))

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
        self, client: discord.Client, target: Target, report: FlagReport, dlog: FilteringBoundLogger
    ) -> None:
        """Post the moderators' notice of a flagged turn; a refused post is logged, never raised."""
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

    async def post(self, place: Place, text: str) -> str:
        """The console's :class:`~core.console.outbox.Outbox`: ``text`` in the conversation's channel (a
        thread is a channel), as the bot, mention-safe; the first message's id."""
        client, _ = await self._rest()
        guild = int(place.workspace) if place.workspace.isdigit() else None
        channel = client.get_partial_messageable(int(place.thread or place.channel), guild_id=guild)
        posted = ""
        try:
            for part in split_text(to_discord(text), MESSAGE_LIMIT):
                message = await channel.send(part, allowed_mentions=NO_MENTIONS)
                posted = posted or str(message.id)
        except discord.HTTPException as exc:
            raise AdapterError(f"Discord refused the message: HTTP {exc.status}") from None
        return posted

    async def aclose(self) -> None:
        async with self._login:
            if self._closed:
                return
            self._closed = True
            if self._session is not None:
                await self._session.close()
            if self._client is not None:
                await self._client.close()


def _anchor(handles: Sequence[object]) -> str:
    """The id of the reply's first message, when the sink's handle says."""
    first = handles[0] if handles else None
    return str(getattr(first, "id", first or ""))


async def _choices(
    channel: discord.abc.Messageable, choices: tuple[Choice, ...], dlog: FilteringBoundLogger
) -> discord.Message | None:
    """A story part's choices as buttons under it (a click is a vote: adapters/discord/adapter.py); each
    carries the story, the round and the number (``Choice.value``)."""
    view = discord.ui.View(timeout=None)
    for choice in choices:
        view.add_item(
            discord.ui.Button(
                label=f"{choice.number}. {choice.label}"[:80],
                custom_id=f"{STORY_BUTTON}{choice.value}",
                style=discord.ButtonStyle.primary,
            )
        )
    try:
        return await channel.send(
            "Vote for what happens next:", view=view, allowed_mentions=NO_MENTIONS, suppress_embeds=True
        )
    except (discord.DiscordException, aiohttp.ClientError, OSError) as exc:
        dlog.warning("discord_choices_failed", error=type(exc).__name__, detail=str(exc)[:200])
        return None


async def _upload(
    sink: ChannelSink | InteractionSink, files: tuple[Attachment, ...], dlog: FilteringBoundLogger
) -> None:
    """Upload the reply's files (``/imagine``'s picture); a refused upload is logged, never raised."""
    try:
        await sink.upload(files)
    except (discord.DiscordException, aiohttp.ClientError, OSError) as exc:
        dlog.warning("discord_upload_failed", error=type(exc).__name__, detail=str(exc)[:200])
    else:
        dlog.info("discord_files_uploaded", files=[a.filename for a in files])


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
