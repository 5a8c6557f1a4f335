"""Showing replies on Slack: the steps of :class:`~adapters.common.deliver.ReplyDelivery` for ``slack``.

A queue worker (in the adapter's process or a ``--workers-only`` one) hands it a job and the engine's reply
stream. It needs only the Web API: the bot token (one workspace) or the workspace's token from the Redis
installation store (OAuth), so any replica can answer any workspace.

    text      message: native stream or post + paced updates, split at 4,000 chars, 👍/👎 (or confirm /
              cancel for a proposed tool call: the confirm step is done here), thread mark;
              command: streamed into the channel; ephemeral answers (``/help``, refusals, votes) through
              ``response_url``, which also serves when the bot cannot post in that channel
    files     ``files_upload_v2`` in the reply's thread (a top-level command's: under its first message)
    choices   vote buttons; remembered, so the next part or the end retires them (``chat.update``)
    notices   private ones with ``chat.postEphemeral``
    handoff   a notice with a "Resume bot" button in the support channel
    flag      a notice in the moderators' channel (:mod:`adapters.slack.flags`), from the job alone

Failures are logged with the conversation and never raised: the engine's turn still completes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.common.citations import shown_text
from adapters.common.controls import Controls
from adapters.common.deliver import ReplyDelivery, Shown
from adapters.common.deps import EdgeDeps
from adapters.common.flags import FlagReport
from adapters.common.split import split_text
from adapters.slack.client import web_client, webhook_client
from adapters.slack.flags import notice_text
from adapters.slack.mrkdwn import to_mrkdwn
from adapters.slack.oauth import RedisInstallationStore
from adapters.slack.reply import Rendered, ReplyOptions, render_reply
from adapters.slack.route import SlackTarget, response_url_key, route_for, target_for, target_of
from adapters.slack.settings import SlackBotConfig, SlackSettings
from adapters.slack.sink import MESSAGE_LIMIT, slack_error_code
from adapters.slack.state import SlackState
from adapters.slack.translate import HANDOFF_RESUME, story_blocks
from adapters.slack.users import UserNames
from core.errors import AdapterError, CredentialError, ParleyError
from core.media.fetch import ImageHosts
from core.ops.jobs import Job, Route
from core.reply import fold_reply
from core.types import (
    Attachment,
    Choice,
    ConfirmRequest,
    ImageRef,
    Place,
    ReplyDone,
    ReplyEvent,
    ReplyKind,
    ReplyResult,
    Turn,
)

log = structlog.get_logger("parley.slack")

RESPONSE_URL_POSTS = 5  # Slack accepts up to 5 posts per response_url
SLACK_ERRORS = (SlackApiError, SlackClientError)
# What a side post (a notice) may fail with: Slack's errors, the transport's, a timeout.
NOTICE_ERRORS = (SlackApiError, SlackClientError, aiohttp.ClientError, OSError, TimeoutError)


STORY = "story"  # the controls name of a story's vote buttons (ReplyResult.retire)
VOTES_CLOSED = "Voting on this part has closed."


@dataclass(frozen=True, slots=True)
class SlackWhere:
    """The target step's answer: where the reply goes, and the workspace's Web API client."""

    target: SlackTarget
    client: AsyncWebClient


class SlackDelivery(ReplyDelivery[SlackWhere]):
    """Render reply streams onto Slack. ``aclose()`` is idempotent."""

    platform = "slack"

    def __init__(self, deps: EdgeDeps, settings: SlackSettings, config: SlackBotConfig) -> None:
        super().__init__(redact=deps.redact)
        self.deps = deps
        self.settings = settings
        self.config = config
        self.state = SlackState(
            deps.redis,
            deps.keys,
            thread_ttl=int(deps.bot.config.memory.ttl_days * 86_400),
            count_vote=deps.count_vote,
        )
        token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
        # One kept-alive session for every reply (slack_sdk alone opens a connection per call).
        self._client = web_client(token, settings.slack_api_url, keep_alive=True) if token else None
        self.names = UserNames(deps.redis, deps.keys)
        self.box = deps.box  # installations and response_urls are sealed in Redis
        self.installations: RedisInstallationStore | None = None
        if token is None and settings.slack_client_id:
            self.installations = RedisInstallationStore(
                deps.redis, deps.keys, client_id=settings.slack_client_id, box=self.box
            )
        self.no_native: set[str] = set()  # workspaces whose chat.startStream failed as unsupported
        self.flag_notices = 0  # moderators' notices posted: tests and logs
        self.controls = Controls(
            deps.redis, deps.keys, ttl_seconds=int(deps.bot.config.memory.ttl_days * 86_400)
        )
        self._log = log.bind(bot=deps.bot.name, platform="slack")
        self._closed = False

    # ------------------------------------------------------------------ the steps

    async def target(self, job: Job) -> SlackWhere:
        target = target_of(job.route)
        return SlackWhere(target, await self.client_for(target.team))

    async def text(self, job: Job, target: SlackWhere, events: AsyncIterator[ReplyEvent]) -> Shown:
        if target.target.kind == "command":
            return await self._command(job.turn, target.target, target.client, events)
        return await self._message(job.turn, target.target, target.client, events)

    async def say(self, job: Job, target: SlackWhere, text: str, *, private: bool = False) -> None:
        """A line beside the reply: ``chat.postEphemeral`` to the asker when private."""
        t = target.target
        user = t.user or job.turn.author.id
        if private:
            await target.client.chat_postEphemeral(
                channel=t.channel, user=user, text=to_mrkdwn(text), thread_ts=t.thread_ts or None
            )
            return
        await target.client.chat_postMessage(
            channel=t.channel,
            thread_ts=t.thread_ts or None,
            text=to_mrkdwn(text),
            unfurl_links=False,
            unfurl_media=False,
        )

    async def files(self, job: Job, target: SlackWhere, shown: Shown, files: tuple[Attachment, ...]) -> None:
        await self._upload(target.client, job.turn, target.target, files, thread=shown.anchor)

    async def choices(self, job: Job, target: SlackWhere, shown: Shown, choices: tuple[Choice, ...]) -> None:
        await self._choices(target.client, job.turn, target.target, choices)

    async def confirm(self, job: Job, target: SlackWhere, shown: Shown, question: ConfirmRequest) -> None:
        """Done by the text step: the buttons sit on the question's last message (or its stream's end)."""
        return

    async def handoff(self, job: Job, target: SlackWhere, shown: Shown) -> None:
        await self._handoff_notice(target.client, job.turn, target.target)

    async def flag(self, job: Job, target: SlackWhere, report: FlagReport) -> None:
        await self._flag_notice(target.client, job.turn, target.target, report)

    async def retire(self, job: Job, target: SlackWhere, controls: tuple[str, ...]) -> None:
        """Take the vote buttons off a story's earlier parts (its round closed, or the story ended)."""
        if STORY not in controls:
            return
        for ref in await self.controls.take(job.turn.place, STORY):
            channel, _, ts = ref.partition(":")
            try:
                await target.client.chat_update(
                    channel=channel,
                    ts=ts,
                    text=VOTES_CLOSED,
                    blocks=[{"type": "context", "elements": [{"type": "mrkdwn", "text": VOTES_CLOSED}]}],
                )
            except SLACK_ERRORS as exc:
                self._log.warning(
                    "slack_retire_failed", error=slack_error_code(exc), **_context(self.deps, job.turn)
                )

    async def aclose(self) -> None:
        self._closed = True
        if self._client is not None:
            await self._client.aclose()

    # ------------------------------------------------------------------ credentials

    async def post(self, place: Place, text: str) -> str:
        """The console's :class:`~core.console.outbox.Outbox`: ``text`` in the conversation's thread, as the
        bot (escaped and mention-safe like any reply); the message's ``ts``."""
        client = await self.client_for(place.workspace)
        posted = ""
        try:
            for part in split_text(to_mrkdwn(text), MESSAGE_LIMIT):
                response = await client.chat_postMessage(
                    channel=place.channel, thread_ts=place.thread or None, text=part, unfurl_links=False
                )
                posted = posted or str(response.get("ts", ""))
        except SLACK_ERRORS as exc:
            raise AdapterError(f"Slack refused the message: {slack_error_code(exc)}") from None
        if place.thread:
            await self.state.mark_thread(place)  # the customer's next words reach the bot (and the console)
        return posted

    async def client_for(self, team: str) -> AsyncWebClient:
        """A Web API client with the bot token of ``team`` (the one token, or the installation's)."""
        if self._client is not None:
            return self._client
        if self.installations is None:
            raise AdapterError("no Slack credentials: SLACK_BOT_TOKEN or SLACK_CLIENT_ID/SECRET")
        bot = await self.installations.async_find_bot(enterprise_id=None, team_id=team or None)
        if bot is None or not bot.bot_token:
            raise AdapterError(f"Slack workspace {team} has no installation (app uninstalled?)")
        return web_client(bot.bot_token, self.settings.slack_api_url)

    async def _upload(
        self,
        client: AsyncWebClient,
        turn: Turn,
        target: SlackTarget,
        files: tuple[Attachment, ...],
        *,
        thread: str = "",
    ) -> None:
        """The reply's files (``/imagine``'s picture) with ``files_upload_v2``, in the reply's thread (a
        top-level command's files go under its answer, ``thread``); a refused upload (no ``files:write``
        scope, not in the channel) is logged, never raised."""
        uploads = [{"file": a.data, "filename": a.filename, "title": a.title or a.filename} for a in files]
        try:
            await client.files_upload_v2(
                file_uploads=uploads, channel=target.channel, thread_ts=target.thread_ts or thread or None
            )
        except SLACK_ERRORS as exc:
            self._log.warning("slack_upload_failed", error=slack_error_code(exc), **_context(self.deps, turn))
        else:
            self._log.info(
                "slack_files_uploaded",
                files=[a.filename for a in files],
                **_context(self.deps, turn),
            )

    async def _choices(
        self, client: AsyncWebClient, turn: Turn, target: SlackTarget, choices: tuple[Choice, ...]
    ) -> None:
        """A story part's choices as buttons (a click is a vote: adapters/slack/app.py), remembered so the
        next part or the story's end takes them away."""
        try:
            posted = await client.chat_postMessage(
                channel=target.channel,
                thread_ts=target.thread_ts or None,
                text="Vote for what happens next: " + ", ".join(c.label for c in choices),
                blocks=story_blocks(choices),
                unfurl_links=False,
                unfurl_media=False,
            )
        except SLACK_ERRORS as exc:
            self._log.warning(
                "slack_choices_failed", error=slack_error_code(exc), **_context(self.deps, turn)
            )
            return
        ts = str(posted.get("ts") or "")
        if ts:
            await self.controls.remember(turn.place, STORY, f"{target.channel}:{ts}")

    def story_route(self, turn: Turn) -> Route:
        """Where a story's next part goes (core/runtime.py:story_route): the story's channel."""
        return route_for(target_for(turn))

    def image_hosts(self) -> ImageHosts:
        """Where Slack serves files (core's ImageSource): its own hosts over https, or the configured Web
        API host (a proxy, a test fake)."""
        return ImageHosts(("slack.com", ".slack.com"), self.settings.slack_api_url or "")

    async def image_headers(self, ref: ImageRef, place: Place) -> Mapping[str, str]:
        """The bot token for a file's ``url_private`` (core's ImageAuth), sent only to Slack's own hosts
        (or the configured Web API host: a proxy, a test fake)."""
        url, api = urlsplit(ref.url), urlsplit(self.settings.slack_api_url or "")
        host = (url.hostname or "").lower()
        slack_host = url.scheme == "https" and (host == "slack.com" or host.endswith(".slack.com"))
        if not (slack_host or (api.netloc and url.netloc == api.netloc)):
            raise AdapterError("a Slack file URL outside Slack's hosts: not sending the token there")
        client = await self.client_for(place.workspace)
        return {"Authorization": f"Bearer {client.token}"} if client.token else {}

    # ------------------------------------------------------------------ messages

    async def _message(
        self, turn: Turn, target: SlackTarget, client: AsyncWebClient, events: AsyncIterator[ReplyEvent]
    ) -> Shown:
        native = self.config.streaming != "edit" and target.team not in self.no_native
        done = await render_reply(
            client,
            events,
            channel=target.channel,
            thread_ts=target.thread_ts,
            team_id=target.team,
            user_id=target.user,
            options=ReplyOptions(
                native=native,
                feedback=self.config.feedback,
                min_interval=self.config.edit_interval,
                limit=MESSAGE_LIMIT,
            ),
            log_context=_context(self.deps, turn),
        )
        if done.native_unsupported and self.config.streaming == "auto":
            self.no_native.add(target.team)
            self._log.info("slack_native_streaming_unavailable", workspace=target.team)
        if target.assistant and not done.messages:
            await set_status(client, target.channel, target.thread_ts, "")  # nothing posted: clear "thinking"
        result = done.result
        shown = Shown(result, done.messages[0] if done.messages else "")
        if result is None or result.kind is ReplyKind.IGNORED:
            return shown
        if done.messages and target.thread_ts:
            try:
                await self.state.mark_thread(turn.place)
            except ParleyError as exc:  # the reply is out; only later follow-ups lose the shortcut
                self._log.warning("slack_thread_mark_failed", error=str(exc), **_context(self.deps, turn))
        return shown

    async def _handoff_notice(self, client: AsyncWebClient, turn: Turn, target: SlackTarget) -> None:
        """Tell the support channel: who asked, a link to the thread, and a button to resume the bot."""
        channel = self.config.handoff_channel
        context = _context(self.deps, turn)
        if not channel:
            self._log.warning("slack_handoff_without_channel", **context)
            return
        ts = target.message_ts or target.thread_ts
        link = await self._permalink(client, target, context, message_ts=ts)
        where = f"<{link}|this conversation>" if link else f"<#{target.channel}>"
        text = (
            f"{self.config.handoff_notice} <@{target.user}> is waiting in {where}. "
            "The bot stays quiet there until someone resumes it."
        )
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": HANDOFF_RESUME,
                        "text": {"type": "plain_text", "text": "Resume bot"},
                        "value": f"{target.channel}:{target.thread_ts}",
                    }
                ],
            },
        ]
        try:
            await client.chat_postMessage(
                channel=channel, text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
            )
        except SLACK_ERRORS as exc:
            self._log.error(
                "reply_undeliverable", via="handoff_notice", error=slack_error_code(exc), **context
            )

    async def _permalink(
        self, client: AsyncWebClient, target: SlackTarget, context: dict[str, str], *, message_ts: str
    ) -> str:
        """A link to ``message_ts`` in the target's channel, or "" when Slack will not give one."""
        if not message_ts:
            return ""
        try:
            response = await client.chat_getPermalink(channel=target.channel, message_ts=message_ts)
        except NOTICE_ERRORS as exc:
            self._log.warning("slack_permalink_failed", error=slack_error_code(exc), **context)
            return ""
        return str(response.get("permalink") or "")

    # ------------------------------------------------------------------ moderators' notices

    def moderators_channel(self) -> str:
        return self.config.moderators_channel

    async def _flag_notice(
        self, client: AsyncWebClient, turn: Turn, target: SlackTarget, report: FlagReport
    ) -> None:
        """Tell the moderators: category, turn, who, where, and a redacted excerpt. Never raises."""
        context = _context(self.deps, turn)
        channel = self.moderators_channel()
        if not channel:
            self._warn_unrouted(
                self._log,
                "slack_flag_without_channel",
                hint="set moderators_channel in [slack] or SLACK_MODERATORS_CHANNEL; logged once",
                category=report.category,
                **context,
            )
            return
        name = report.user_name
        if not name and self.config.display_names:
            name = await self.names.lookup(client, target.team, target.user or turn.author.id)
        report = replace(report, user_id=target.user or turn.author.id, user_name=name)
        # The user's own message; a slash command has none (its channel is all there is to show).
        permalink = await self._permalink(client, target, context, message_ts=target.message_ts)
        try:
            await client.chat_postMessage(
                channel=channel,
                text=notice_text(report, target.channel, permalink),
                unfurl_links=False,
                unfurl_media=False,
            )
        except NOTICE_ERRORS as exc:
            self._log.error("reply_undeliverable", via="flag_notice", error=slack_error_code(exc), **context)
            return
        self.flag_notices += 1
        self._log.info("slack_flag_notice", category=report.category, channel=channel, **context)

    # ------------------------------------------------------------------ slash commands

    async def _command(
        self, turn: Turn, target: SlackTarget, client: AsyncWebClient, events: AsyncIterator[ReplyEvent]
    ) -> Shown:
        first = await anext(events)
        command = self.deps.commands.get(turn.command.name) if turn.command else None
        vote = turn.command is not None and turn.command.name == "story" and turn.command.args.isdigit()
        private = (command is not None and command.ephemeral) or target.private or vote
        if isinstance(first, ReplyDone) or private:
            # A story vote's answer is the voter's alone: fold it and answer through response_url.
            result = (await fold_reply(events, first=first)).outcome()
            await self._respond(turn, result, private=target.private)
            return Shown(result)

        async def stream() -> AsyncIterator[ReplyEvent]:
            yield first
            async for event in events:
                yield event

        done: Rendered = await render_reply(
            client,
            stream(),
            channel=target.channel,
            thread_ts=target.thread_ts,
            team_id=target.team,
            user_id=target.user,
            options=ReplyOptions(native=False, feedback=False, min_interval=self.config.edit_interval),
            log_context=_context(self.deps, turn),
        )
        if not done.messages and done.result is not None:
            # The bot cannot post in this channel (not a member, a DM it is not part of): use response_url.
            await self._respond(turn, done.result, in_channel=True)
        return Shown(done.result, done.messages[0] if done.messages else "")

    async def _respond(
        self, turn: Turn, result: ReplyResult, *, in_channel: bool = False, private: bool = False
    ) -> None:
        """Answer a slash command through its ``response_url`` (ephemeral unless ``in_channel``)."""
        if not result.text.strip():
            return
        try:
            sealed = await self.deps.redis.get(response_url_key(self.deps.keys, turn.turn_id))
            url = self.box.open(sealed) if sealed else None
        except (RedisError, CredentialError) as exc:
            self._log.error("reply_undeliverable", via="response_url", error=type(exc).__name__)
            return
        if not url:
            self._log.error(
                "reply_undeliverable", via="response_url", error="expired", **_context(self.deps, turn)
            )
            return
        private = private or (not in_channel and (result.ephemeral or result.kind is ReplyKind.REFUSAL))
        hook = webhook_client(str(url))
        for chunk in split_text(to_mrkdwn(shown_text(result)), MESSAGE_LIMIT)[:RESPONSE_URL_POSTS]:
            response = await hook.send(
                text=chunk,
                response_type="ephemeral" if private else "in_channel",
                replace_original=False,
                unfurl_links=False,
                unfurl_media=False,
            )
            if response.status_code != 200:
                self._log.error(
                    "reply_undeliverable",
                    via="response_url",
                    status=response.status_code,
                    **_context(self.deps, turn),
                )
                return


async def set_status(client: AsyncWebClient, channel: str, thread_ts: str, status: str) -> None:
    """The Assistant panel's "is thinking…" line ("" clears it); a plain DM thread refuses: fine."""
    try:
        await client.assistant_threads_setStatus(channel_id=channel, thread_ts=thread_ts, status=status)
    except SLACK_ERRORS as exc:
        log.debug("slack_set_status_failed", error=slack_error_code(exc))


def _context(deps: EdgeDeps, turn: Turn) -> dict[str, str]:
    return {
        "bot": deps.bot.name,
        "platform": "slack",
        "conversation": turn.place.conversation_id,
        "turn_id": turn.turn_id,
    }
