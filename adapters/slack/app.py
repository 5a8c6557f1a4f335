"""The Slack adapter: bolt's ``AsyncApp`` over HTTP (``POST /slack/events``) or Socket Mode.

Ack first, work after, and the work is ours: bolt runs with ``process_before_response=True``, so it awaits
each listener before answering Slack, and every listener here only translates the payload (pure functions)
and hands the work to this adapter's :class:`~core.tasks.TaskOwner`, then returns. Slack gets its ack in
milliseconds; the LLM work runs in a task we own, cancelled and awaited on shutdown, never in bolt's bare
``ensure_future``.

Exactly one reply per message: the turn's ``event_id`` is the message identity (see
:mod:`adapters.slack.translate`) and the engine dedupes it in Redis, across retries and replicas.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar, cast

import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.common.split import split_text
from adapters.slack.client import web_client, webhook_client
from adapters.slack.mrkdwn import to_mrkdwn
from adapters.slack.oauth import RedisInstallationStore, RedisOAuthStateStore
from adapters.slack.payloads import BlockActions, EventCallback, SlashCommand
from adapters.slack.reply import ReplyOptions, deliver
from adapters.slack.settings import BOT_SCOPES, Mode, SlackBotConfig, SlackSettings
from adapters.slack.sink import MESSAGE_LIMIT, slack_error_code
from adapters.slack.state import SlackState
from adapters.slack.translate import (
    FEEDBACK_DOWN,
    FEEDBACK_UP,
    HANDOFF_RESUME,
    BotIdentity,
    EventOptions,
    Feedback,
    feedback_from_action,
    resume_target,
    turn_from_command,
    turn_from_event,
)
from core.errors import AdapterError, ConfigError, ParleyError
from core.runtime import Runtime
from core.tasks import TaskOwner
from core.types import Author, ReplyDelta, ReplyDone, ReplyEvent, ReplyKind, ReplyReplace, ReplyResult, Turn

log = structlog.get_logger("parley.slack")
T = TypeVar("T")

EVENTS_PATH = "/slack/events"
INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
RESPONSE_URL_POSTS = 5  # Slack accepts up to 5 posts per response_url
THREAD_COMMANDS = frozenset({"resume", "reset"})
SLACK_ERRORS = (SlackApiError, SlackClientError)


class SlackAdapter:
    """Serve one bot on Slack until cancelled. ``aclose()`` is idempotent."""

    def __init__(self, runtime: Runtime, settings: SlackSettings, config: SlackBotConfig, mode: Mode) -> None:
        self.rt = runtime
        self.settings = settings
        self.config = config
        self.mode = mode
        self.tasks = TaskOwner("slack")
        self.state = SlackState(
            runtime.redis, runtime.keys, thread_ttl=int(runtime.bot.config.memory.ttl_days * 86_400)
        )
        self.commands = config.command_map([c.name for c in runtime.engine.commands])
        self.event_options = EventOptions(
            answer_bots=config.answer_bots,
            follow_threads=config.follow_threads,
            admins=frozenset(config.admins),
        )
        self.port: int | None = None
        self.ready = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_concurrent_turns)
        self._no_native: set[str] = set()  # workspaces whose chat.startStream failed as unsupported
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._closed = False
        self._log = log.bind(bot=runtime.bot.name, platform="slack", mode=mode.value)
        self.client = web_client(
            settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None,
            settings.slack_api_url,
        )
        self.installations: RedisInstallationStore | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------------ bolt wiring

    def _build_app(self) -> AsyncApp:
        s = self.settings
        common: dict[str, Any] = {
            "name": f"parley-{self.rt.bot.name}",
            "logger": logging.getLogger("parley.slack.bolt"),
            "process_before_response": True,  # listeners only hand work off; see the module docstring
            "client": self.client,
            "signing_secret": s.slack_signing_secret.get_secret_value() if s.slack_signing_secret else "",
        }
        if self.mode is Mode.OAUTH:
            if s.slack_client_id is None or s.slack_client_secret is None:
                raise ConfigError("OAuth mode needs SLACK_CLIENT_ID and SLACK_CLIENT_SECRET")
            self.installations = RedisInstallationStore(
                self.rt.redis, self.rt.keys, client_id=s.slack_client_id
            )
            oauth = AsyncOAuthSettings(
                client_id=s.slack_client_id,
                client_secret=s.slack_client_secret.get_secret_value(),
                scopes=list(BOT_SCOPES),
                user_scopes=[],
                redirect_uri=s.slack_redirect_uri,
                install_path=INSTALL_PATH,
                redirect_uri_path=REDIRECT_PATH,
                installation_store=self.installations,
                state_store=RedisOAuthStateStore(self.rt.redis, self.rt.keys),
            )
            app = AsyncApp(oauth_settings=oauth, **common)
            app.enable_token_revocation_listeners()
        else:
            app = AsyncApp(**common)

        app.event("app_mention")(self._on_message_event)
        app.event("message")(self._on_message_event)
        app.event("assistant_thread_started")(self._on_assistant_thread_started)
        app.event("assistant_thread_context_changed")(self._on_ignored_event)
        for slack_name in self.commands:
            app.command(slack_name)(self._on_command)
        app.action(FEEDBACK_UP)(self._on_feedback)
        app.action(FEEDBACK_DOWN)(self._on_feedback)
        app.action(HANDOFF_RESUME)(self._on_resume_click)
        return app

    # ------------------------------------------------------------------ listeners (fast: translate, hand off)

    async def _on_message_event(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        try:
            me = BotIdentity(context.bot_user_id or "", context.bot_id or "")
            turn = turn_from_event(cast(EventCallback, body), me, self.event_options)
            if turn is None:
                return
            parent = str(body.get("event", {}).get("parent_user_id", ""))
            self._start(self._answer(turn, context.client, me, parent), f"slack:turn:{turn.turn_id}")
        except Exception:  # task boundary: a bad payload must not make Slack retry it forever
            self._log.exception("slack_event_listener_failed", event_id=body.get("event_id", ""))

    async def _on_ignored_event(self) -> None:
        return None

    async def _on_assistant_thread_started(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        thread = body.get("event", {}).get("assistant_thread", {})
        channel, thread_ts = str(thread.get("channel_id", "")), str(thread.get("thread_ts", ""))
        if self.config.assistant and channel and thread_ts:
            self._start(
                self._greet_assistant_thread(context.client, channel, thread_ts), f"slack:greet:{channel}"
            )

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack(text=self.config.working_text, response_type="ephemeral")  # only the caller sees it
        try:
            turn = turn_from_command(
                cast(SlashCommand, body), self.commands, frozenset(self.config.admins), THREAD_COMMANDS
            )
            if turn is None:
                return
            response_url = str(body.get("response_url", ""))
            self._start(self._run_command(turn, context.client, response_url), f"slack:turn:{turn.turn_id}")
        except Exception:  # task boundary, as above
            self._log.exception("slack_command_listener_failed", command=body.get("command", ""))

    async def _on_feedback(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        feedback = feedback_from_action(cast(BlockActions, body))
        if feedback is not None:
            self._start(self._record_feedback(feedback, context.client), "slack:feedback")

    async def _on_resume_click(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        actions = body.get("actions") or [{}]
        team = str((body.get("team") or {}).get("id", "") or context.team_id or "")
        place = resume_target(str(actions[0].get("value", "")), team)
        user = str((body.get("user") or {}).get("id", ""))
        if place is not None and user:
            turn = Turn(author=Author(id=user), place=place, text="/resume")
            self._start(self._resume_from_button(turn, str(body.get("response_url", ""))), "slack:resume")

    def _start(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Hand work to the adapter's task owner (never bolt's): refused once closing or overloaded."""
        if self._closed:
            work.close()
            return
        if len(self.tasks) >= self.config.max_pending_turns:
            work.close()
            self._log.warning("slack_overloaded", pending=len(self.tasks), task=name)
            return
        self.tasks.spawn(work, name=name)

    # ------------------------------------------------------------------ the work after the ack

    def _context(self, turn: Turn) -> dict[str, str]:
        return {
            "bot": self.rt.bot.name,
            "platform": "slack",
            "conversation": turn.place.conversation_id,
            "turn_id": turn.turn_id,
        }

    async def _answer(self, turn: Turn, client: AsyncWebClient, me: BotIdentity, parent: str) -> None:
        async with self._slots:
            tlog = self._log.bind(conversation=turn.place.conversation_id, turn_id=turn.turn_id)
            try:
                await self._answer_turn(turn, client, me, parent, tlog)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # task boundary: log with the conversation, keep serving
                tlog.exception("slack_turn_failed", error=type(exc).__name__)

    async def _answer_turn(
        self, turn: Turn, client: AsyncWebClient, me: BotIdentity, parent: str, tlog: Any
    ) -> None:
        follow = not turn.addressed and bool(turn.place.thread) and self.config.follow_threads
        if follow and ((me.user_id and parent == me.user_id) or await self.state.in_thread(turn.place)):
            turn = replace(turn, addressed=True)
        if not turn.addressed and not self.config.remember_unjoined_threads:
            return  # chatter in a thread the bot was never asked into: not ours to read or keep
        assistant = (
            self.config.assistant
            and turn.addressed
            and turn.place.channel.startswith("D")
            and bool(turn.place.thread)
        )
        if assistant:
            await self._set_status(client, turn, self.config.thinking_status)
        native = self.config.streaming != "edit" and turn.place.workspace not in self._no_native
        async with _closing(self.rt.engine.reply(turn)) as events:
            delivery = await deliver(
                client,
                events,
                channel=turn.place.channel,
                thread_ts=turn.place.thread,
                team_id=turn.place.workspace,
                user_id=turn.author.id,
                options=ReplyOptions(
                    native=native,
                    feedback=self.config.feedback,
                    min_interval=self.config.edit_interval,
                    limit=MESSAGE_LIMIT,
                ),
                log_context=self._context(turn),
            )
        if delivery.native_unsupported and self.config.streaming == "auto":
            self._no_native.add(turn.place.workspace)
            tlog.info("slack_native_streaming_unavailable", workspace=turn.place.workspace)
        result = delivery.result
        if assistant and not delivery.messages:
            await self._set_status(client, turn, "")  # nothing was posted: clear "thinking"
        if result is None or result.kind is ReplyKind.IGNORED:
            return
        if delivery.messages and turn.place.thread:
            await self.state.mark_thread(turn.place)
        if result.meta.get("handoff"):
            await self._handoff_notice(client, turn)

    async def _run_command(self, turn: Turn, client: AsyncWebClient, response_url: str) -> None:
        async with self._slots:
            tlog = self._log.bind(conversation=turn.place.conversation_id, turn_id=turn.turn_id)
            try:
                async with _closing(self.rt.engine.reply(turn)) as events:
                    await self._command_reply(turn, client, response_url, events)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # task boundary
                tlog.exception("slack_command_failed", error=type(exc).__name__)

    async def _command_reply(
        self, turn: Turn, client: AsyncWebClient, response_url: str, events: AsyncIterator[ReplyEvent]
    ) -> None:
        first = await anext(events)
        command = self.rt.engine.commands.get(turn.command.name) if turn.command else None
        if isinstance(first, ReplyDone) or (command is not None and command.ephemeral):
            result = first.result if isinstance(first, ReplyDone) else await _collect(first, events)
            await self._respond(turn, response_url, result)
            return

        async def stream() -> AsyncIterator[ReplyEvent]:
            yield first
            async for event in events:
                yield event

        delivery = await deliver(
            client,
            stream(),
            channel=turn.place.channel,
            thread_ts=turn.place.thread,
            team_id=turn.place.workspace,
            user_id=turn.author.id,
            options=ReplyOptions(native=False, feedback=False, min_interval=self.config.edit_interval),
            log_context=self._context(turn),
        )
        if not delivery.messages and delivery.result is not None:
            # The bot cannot post in this channel (not a member, a DM it is not part of): use response_url.
            await self._respond(turn, response_url, delivery.result, in_channel=True)

    async def _respond(
        self, turn: Turn, response_url: str, result: ReplyResult, *, in_channel: bool = False
    ) -> None:
        """Answer a slash command through its ``response_url`` (ephemeral unless ``in_channel``)."""
        if not result.text.strip() or not response_url:
            return
        private = not in_channel and (result.ephemeral or result.kind is ReplyKind.REFUSAL)
        hook = webhook_client(response_url)
        chunks = split_text(to_mrkdwn(result.text), MESSAGE_LIMIT)
        for chunk in chunks[:RESPONSE_URL_POSTS]:
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
                    **self._context(turn),
                )
                return

    async def _set_status(self, client: AsyncWebClient, turn: Turn, status: str) -> None:
        try:
            await client.assistant_threads_setStatus(
                channel_id=turn.place.channel, thread_ts=turn.place.thread, status=status
            )
        except SLACK_ERRORS as exc:  # a plain DM thread is not an assistant thread: fine
            self._log.debug("slack_set_status_failed", error=slack_error_code(exc))

    async def _greet_assistant_thread(self, client: AsyncWebClient, channel: str, thread_ts: str) -> None:
        persona = self.rt.bot.persona(None)
        try:
            await client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=to_mrkdwn(persona.greeting),
                unfurl_links=False,
                unfurl_media=False,
            )
            prompts = [p.model_dump() for p in self.config.suggested_prompts[:4]]
            if prompts:
                await client.assistant_threads_setSuggestedPrompts(
                    channel_id=channel,
                    thread_ts=thread_ts,
                    title=self.config.suggested_prompts_title,
                    prompts=prompts,
                )
        except SLACK_ERRORS as exc:
            self._log.warning("slack_assistant_greeting_failed", error=slack_error_code(exc), channel=channel)

    async def _record_feedback(self, feedback: Feedback, client: AsyncWebClient) -> None:
        try:
            fresh = await self.state.record_feedback(feedback)
        except ParleyError as exc:
            self._log.error("slack_feedback_not_saved", error=str(exc), turn_id=feedback.turn_id)
            return
        self._log.info(
            "slack_feedback",
            turn_id=feedback.turn_id,
            vote=feedback.vote,
            user_id=feedback.user_id,
            conversation=feedback.place.conversation_id,
            changed=fresh,
        )
        try:
            await client.chat_postEphemeral(
                channel=feedback.place.channel,
                user=feedback.user_id,
                thread_ts=feedback.place.thread or None,
                text="Thanks for the feedback!",
            )
        except SLACK_ERRORS as exc:
            self._log.debug("slack_feedback_ack_failed", error=slack_error_code(exc))

    async def _handoff_notice(self, client: AsyncWebClient, turn: Turn) -> None:
        """Tell the support channel: who asked, a link to the thread, and a button to resume the bot."""
        channel = self.settings.slack_handoff_channel or self.config.handoff_channel
        if not channel:
            self._log.warning("slack_handoff_without_channel", **self._context(turn))
            return
        place = turn.place
        link = ""
        try:
            response = await client.chat_getPermalink(
                channel=place.channel, message_ts=turn.message_id or place.thread
            )
            link = str(response.get("permalink") or "")
        except SLACK_ERRORS as exc:
            self._log.warning("slack_permalink_failed", error=slack_error_code(exc), **self._context(turn))
        where = f"<{link}|this conversation>" if link else f"<#{place.channel}>"
        text = (
            f"{self.config.handoff_notice} <@{turn.author.id}> is waiting in {where}. "
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
                        "value": f"{place.channel}:{place.thread}",
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
                "reply_undeliverable",
                via="handoff_notice",
                error=slack_error_code(exc),
                **self._context(turn),
            )

    async def _resume_from_button(self, turn: Turn, response_url: str) -> None:
        try:
            await self.rt.engine.resume(turn)
        except ParleyError as exc:
            self._log.error("slack_resume_failed", error=str(exc), conversation=turn.place.conversation_id)
            return
        self._log.info("slack_handoff_resumed", by=turn.author.id, conversation=turn.place.conversation_id)
        if response_url:
            try:
                await webhook_client(response_url).send(
                    text=f"<@{turn.author.id}> resumed the bot in this conversation.",
                    replace_original=True,
                )
            except SLACK_ERRORS as exc:
                self._log.debug("slack_resume_notice_failed", error=slack_error_code(exc))

    # ------------------------------------------------------------------ serving

    async def verify(self) -> None:
        """Fail loudly at start-up: the tokens must work (one clear line, no secret in it)."""
        if self.mode is not Mode.OAUTH:
            try:
                await self.client.auth_test()
            except SlackApiError as exc:
                raise ConfigError(
                    f"SLACK_BOT_TOKEN was rejected by Slack ({slack_error_code(exc)})"
                ) from None
            except SlackClientError as exc:
                raise AdapterError(
                    f"cannot reach Slack at SLACK_API_URL={self.settings.slack_api_url}: {exc}"
                ) from None
            except OSError as exc:
                raise AdapterError(
                    f"cannot reach Slack at SLACK_API_URL={self.settings.slack_api_url}: {exc}"
                ) from None
        if self.mode is Mode.SOCKET:
            assert self.settings.slack_app_token is not None
            probe = web_client(None, self.settings.slack_api_url)
            try:
                await probe.apps_connections_open(app_token=self.settings.slack_app_token.get_secret_value())
            except SlackApiError as exc:
                raise ConfigError(
                    f"SLACK_APP_TOKEN was rejected by Slack ({slack_error_code(exc)})"
                ) from None

    async def serve(self) -> None:
        if self._closed:
            raise RuntimeError("the Slack adapter is closed")
        await self.verify()
        if self.mode is Mode.SOCKET:
            await self._serve_socket()
        else:
            await self._serve_http()

    async def _serve_http(self) -> None:
        web_app = web.Application(client_max_size=1024**2)
        web_app.router.add_post(EVENTS_PATH, self._http_events)
        web_app.router.add_get("/healthz", self._healthz)
        if self.mode is Mode.OAUTH:
            web_app.router.add_get(INSTALL_PATH, self._http_oauth)
            web_app.router.add_get(REDIRECT_PATH, self._http_oauth)
        runner = web.AppRunner(web_app, handle_signals=False, access_log=None)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self.settings.slack_http_host, self.settings.port)
            try:
                await site.start()
            except OSError as exc:
                host, port = self.settings.slack_http_host, self.settings.port
                raise ConfigError(f"PORT={port}: cannot listen on {host}: {exc.strerror}") from None
            self.port = int(runner.addresses[0][1])
            self._log.info("slack_http_listening", host=self.settings.slack_http_host, port=self.port)
            self.ready.set()
            await asyncio.Event().wait()  # until cancelled
        finally:
            await self._stop_transport()

    async def _serve_socket(self) -> None:
        assert self.settings.slack_app_token is not None
        handler = AsyncSocketModeHandler(
            self.app,
            app_token=self.settings.slack_app_token.get_secret_value(),
            web_client=web_client(None, self.settings.slack_api_url),
            logger=logging.getLogger("parley.slack.socket"),
        )
        self._socket = handler
        try:
            await handler.connect_async()  # type: ignore[no-untyped-call]  # bolt leaves it unannotated
            self._log.info("slack_socket_connected")
            self.ready.set()
            await asyncio.Event().wait()  # until cancelled
        finally:
            await self._stop_transport()

    async def _http_events(self, request: web.Request) -> web.Response:
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def _http_oauth(self, request: web.Request) -> web.Response:
        flow = self.app.oauth_flow
        if flow is None:
            return web.Response(status=404)
        bolt_request = await to_bolt_request(request)
        if request.path == INSTALL_PATH:
            bolt_response = await flow.handle_installation(bolt_request)
        else:
            bolt_response = await flow.handle_callback(bolt_request)
        return await to_aiohttp_response(bolt_response)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _stop_transport(self) -> None:
        """Stop taking new requests (the HTTP site or the socket); work in flight goes on."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        handler, self._socket = self._socket, None
        if handler is not None:
            client = handler.client
            await handler.close_async()  # type: ignore[no-untyped-call]  # as above
            # The SDK cancels its own tasks without awaiting them: await them so nothing outlives us.
            pending = [
                t
                for t in (client.message_processor, client.current_session_monitor, client.message_receiver)
                if t is not None
            ]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop_transport()
        await self.tasks.aclose(grace=self.config.shutdown_grace)


@asynccontextmanager
async def _closing(stream: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close an async generator we may stop reading early, so its ``finally`` runs now, not at GC."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def _collect(first: ReplyEvent, events: AsyncIterator[ReplyEvent]) -> ReplyResult:
    text = ""
    result: ReplyResult | None = None
    event: ReplyEvent = first
    while True:
        if isinstance(event, ReplyDelta):
            text += event.text
        elif isinstance(event, ReplyReplace):
            text = event.text
        elif isinstance(event, ReplyDone):
            result = event.result
            break
        try:
            event = await anext(events)
        except StopAsyncIteration:
            break
    return result or ReplyResult("", ReplyKind.ERROR, text)
