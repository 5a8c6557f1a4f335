"""The Slack adapter: bolt's ``AsyncApp`` over HTTP (``POST /slack/events``) or Socket Mode.

Ack first, work after, and the work is never bolt's: bolt runs with ``process_before_response=True``, so it
awaits each listener before answering Slack, and every listener here only translates the payload (pure
functions) and hands a small accept task to this adapter's :class:`~core.tasks.TaskOwner`, then returns.
Slack gets its ack in milliseconds. The accept task decides whether a thread follow-up is addressed, shows
"thinking…" in the Assistant panel, and hands the turn to the dispatcher: into the durable queue
(a worker answers it and shows the reply through :class:`~adapters.slack.delivery.SlackDelivery`) or,
with the queue off, into a task the dispatcher owns. Nothing runs in bolt's bare ``ensure_future``.

The accept task also fills the author's display name (``users.info``, cached a day in Redis by
:class:`~adapters.slack.users.UserNames`), so the name travels with the turn to whichever worker answers it.

Exactly one reply per message: the turn's ``event_id`` is the message identity (see
:mod:`adapters.slack.translate`), deduplicated in Redis (by the queue, or by the engine), across Slack's
retries and across replicas.

HTTP mode mounts its routes on the runtime's HTTP server (``PORT``, beside ``/healthz``, ``/readyz`` and
``/metrics``); Socket Mode connects out. Either way ``/readyz`` includes a ``slack`` check.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from typing import Any, cast

import structlog
from aiohttp import web
from redis.exceptions import RedisError
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from structlog.typing import FilteringBoundLogger

from adapters.common.deps import EdgeDeps
from adapters.slack.client import web_client, webhook_client
from adapters.slack.confirm import TOOL_CANCEL, TOOL_CONFIRM, answered_blocks, turn_from_tool_click
from adapters.slack.delivery import SlackDelivery, set_status
from adapters.slack.mrkdwn import to_mrkdwn
from adapters.slack.oauth import InstallRateLimit, RedisInstallationStore, RedisOAuthStateStore
from adapters.slack.payloads import BlockActions, EventCallback, SlashCommand
from adapters.slack.route import PLATFORM, RESPONSE_URL_TTL, response_url_key, route_for, target_for
from adapters.slack.settings import BOT_SCOPES, Mode, SlackBotConfig, SlackSettings, admin_set, is_admin
from adapters.slack.sink import slack_error_code
from adapters.slack.translate import (
    FEEDBACK_DOWN,
    FEEDBACK_UP,
    HANDOFF_RESUME,
    STORY_VOTE,
    BotIdentity,
    EventOptions,
    Feedback,
    feedback_from_action,
    foreign_link,
    resume_target,
    turn_from_command,
    turn_from_event,
    vote_from_action,
)
from core.clicks import pending_of
from core.errors import AdapterError, ConfigError, ParleyError
from core.ops.delivery import DispatchOutcome
from core.tasks import TaskOwner
from core.types import Author, Turn

log = structlog.get_logger("parley.slack")

EVENTS_PATH = "/slack/events"
INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
THREAD_COMMANDS = frozenset({"resume", "reset"})
RESUME_ADMINS_ONLY = "Only admins can resume the bot (the agents listed in admins in [slack] of bot.toml)."
FOREIGN_LINK = (
    "That link points at a conversation in another channel. Run the command in that channel (or ask an "
    "admin): I only act on conversations in the channel you run it in."
)
SLACK_ERRORS = (SlackApiError, SlackClientError)


class SlackAdapter:
    """Serve one bot on Slack until cancelled. ``aclose()`` is idempotent."""

    def __init__(
        self,
        deps: EdgeDeps,
        settings: SlackSettings,
        config: SlackBotConfig,
        mode: Mode,
        delivery: SlackDelivery,
    ) -> None:
        self.deps = deps
        self.settings = settings
        self.config = config
        self.mode = mode
        self.delivery = delivery
        self.box = deps.box  # response_urls are sealed in Redis
        self.install_limit = InstallRateLimit(deps.redis, deps.keys)  # each install page writes a key
        self.tasks = TaskOwner("slack")
        self.state = delivery.state
        self.names = delivery.names
        self.installations: RedisInstallationStore | None = delivery.installations
        self.commands = config.command_map([c.name for c in deps.commands])
        self.event_options = EventOptions(
            answer_bots=config.answer_bots,
            follow_threads=config.follow_threads,
            admins=admin_set(config.admins, oauth=mode is Mode.OAUTH),
        )
        self.outcomes: collections.Counter[str] = collections.Counter()  # dispatch outcomes (tests, logs)
        self.ready = asyncio.Event()
        self._socket: AsyncSocketModeHandler | None = None
        self._closed = False
        self._log = log.bind(bot=deps.bot.name, platform=PLATFORM, mode=mode.value)
        self.client = web_client(
            settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None,
            settings.slack_api_url,
            keep_alive=True,  # closed in aclose(); bolt's per-request clients share its session
        )
        self.app = self._build_app()
        deps.http.add_check("slack", self._readiness)
        if mode is not Mode.SOCKET:
            deps.http.mount("POST", EVENTS_PATH, self._http_events)
            if mode is Mode.OAUTH:
                deps.http.mount("GET", INSTALL_PATH, self._http_oauth)
                deps.http.mount("GET", REDIRECT_PATH, self._http_oauth)

    @property
    def port(self) -> int | None:
        """The port HTTP mode is served on (the runtime's public HTTP server), once it listens."""
        return self.deps.http.bound.get("public")

    # ------------------------------------------------------------------ bolt wiring

    def _build_app(self) -> AsyncApp:
        s = self.settings
        common: dict[str, Any] = {
            "name": f"parley-{self.deps.bot.name}",
            "logger": logging.getLogger("parley.slack.bolt"),
            "process_before_response": True,  # listeners only hand work off; see the module docstring
            "client": self.client,
            "signing_secret": s.slack_signing_secret.get_secret_value() if s.slack_signing_secret else "",
        }
        if self.mode is Mode.OAUTH:
            if s.slack_client_id is None or s.slack_client_secret is None or self.installations is None:
                raise ConfigError("OAuth mode needs SLACK_CLIENT_ID and SLACK_CLIENT_SECRET")
            oauth = AsyncOAuthSettings(
                client_id=s.slack_client_id,
                client_secret=s.slack_client_secret.get_secret_value(),
                scopes=list(BOT_SCOPES),
                user_scopes=[],
                redirect_uri=s.slack_redirect_uri,
                install_path=INSTALL_PATH,
                redirect_uri_path=REDIRECT_PATH,
                installation_store=self.installations,
                state_store=RedisOAuthStateStore(self.deps.redis, self.deps.keys),
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
        app.action(TOOL_CONFIRM)(self._on_tool_click)
        app.action(TOOL_CANCEL)(self._on_tool_click)
        app.action(STORY_VOTE)(self._on_story_vote)
        return app

    # ------------------------------------------------------------------ listeners (fast: translate, hand off)

    async def _on_message_event(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        try:
            me = BotIdentity(context.bot_user_id or "", context.bot_id or "")
            turn = turn_from_event(cast(EventCallback, body), me, self.event_options)
            if turn is None:
                return
            parent = str(body.get("event", {}).get("parent_user_id", ""))
            self._start(self._accept(turn, context.client, me, parent), f"slack:accept:{turn.turn_id}")
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
                cast(SlashCommand, body), self.commands, self.event_options.admins, THREAD_COMMANDS
            )
            if turn is None:
                return
            url = str(body.get("response_url", ""))
            if foreign_link(cast(SlashCommand, body), turn):
                self._log.info("slack_foreign_link_refused", command=body.get("command", ""))
                self._start(self._answer_privately(url, FOREIGN_LINK), "slack:foreign-link")
                return
            self._start(self._accept_command(turn, url, context.client), f"slack:accept:{turn.turn_id}")
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
        response_url = str(body.get("response_url", ""))
        if place is not None and user:
            if not is_admin(self.event_options.admins, team, user):  # the same rule as the /resume command
                self._log.info("slack_resume_refused", by=user)
                self._start(self._answer_privately(response_url, RESUME_ADMINS_ONLY), "slack:resume-refused")
                return
            turn = Turn(author=Author(id=user, is_admin=True), place=place, text="/resume")
            self._start(self._resume_from_button(turn, response_url), "slack:resume")

    async def _on_tool_click(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        turn = turn_from_tool_click(cast(BlockActions, body), self.event_options.admins)
        if turn is not None:
            message = body.get("message") or {}
            self._start(
                self._accept_tool_click(
                    turn,
                    context.client,
                    str(message.get("ts", "")),
                    str(message.get("text", "")),
                    str(body.get("response_url", "")),
                ),
                f"slack:tool:{turn.turn_id}",
            )

    async def _accept_tool_click(
        self, turn: Turn, client: AsyncWebClient, ts: str, text: str, response_url: str
    ) -> None:
        """A click by someone else, or on an answered question, is told why privately and goes no further;
        the asker's click takes the buttons off the question (the core also refuses a second click), then
        is answered in the conversation's thread like a message."""
        confirmed, pending_id = pending_of(turn.command) if turn.command is not None else (False, "")
        try:
            check = self.deps.click_refusal
            refusal = await check(pending_id, turn) if check is not None else ""
        except (ParleyError, RedisError) as exc:
            self._log.warning("slack_tool_owner_unknown", error=type(exc).__name__)
            refusal = ""  # the core checks again when it resumes the call
        if refusal:
            self._log.info("slack_tool_click_refused", conversation=turn.place.conversation_id)
            await self._answer_privately(response_url, refusal)
            return
        try:
            if ts:
                await client.chat_update(
                    channel=turn.place.channel,
                    ts=ts,
                    text=text,
                    blocks=answered_blocks(text, turn.author.id, confirmed),
                )
        except SlackClientError as exc:
            self._log.warning("slack_tool_buttons_not_cleared", error=type(exc).__name__)
        try:
            turn = await self._with_name(turn, client)
            target = replace(target_for(turn), kind="message")
            dispatched = await self.deps.dispatcher.dispatch(turn, route_for(target))
            self.outcomes[dispatched.outcome.value] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary
            self._log.exception(
                "slack_accept_failed", error=type(exc).__name__, conversation=turn.place.conversation_id
            )

    async def _on_story_vote(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """A story choice's button: the same turn as ``/story <n>`` (answered privately)."""
        await ack()
        turn = vote_from_action(cast(BlockActions, body))
        if turn is not None:
            url = str(body.get("response_url", ""))
            self._start(self._accept_command(turn, url, context.client), f"slack:vote:{turn.event_id}")

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

    # ------------------------------------------------------------------ after the ack: accept and dispatch

    async def _accept(self, turn: Turn, client: AsyncWebClient, me: BotIdentity, parent: str) -> None:
        tlog = self._log.bind(conversation=turn.place.conversation_id, turn_id=turn.turn_id)
        try:
            follow = not turn.addressed and bool(turn.place.thread) and self.config.follow_threads
            if follow and ((me.user_id and parent == me.user_id) or await self._joined(turn, tlog)):
                turn = replace(turn, addressed=True)
            if not turn.addressed and not self.config.remember_unjoined_threads:
                return  # chatter in a thread the bot was never asked into: not ours to read or keep
            place = turn.place
            assistant = (
                self.config.assistant
                and turn.addressed
                and place.channel.startswith("D")
                and bool(place.thread)
            )
            if assistant:
                await set_status(client, place.channel, place.thread, self.config.thinking_status)
            turn = await self._with_name(turn, client)
            outcome = await self._dispatch(turn, assistant=assistant)
            if assistant and outcome is DispatchOutcome.DUPLICATE:
                await set_status(client, place.channel, place.thread, "")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary: log with the conversation, keep serving
            tlog.exception("slack_accept_failed", error=type(exc).__name__)

    async def _accept_command(self, turn: Turn, response_url: str, client: AsyncWebClient) -> None:
        try:
            if response_url:
                key = response_url_key(self.deps.keys, turn.turn_id)
                await self.deps.redis.set(key, self.deps.box.seal(response_url), ex=RESPONSE_URL_TTL)
            await self._dispatch(await self._with_name(turn, client))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary
            self._log.exception(
                "slack_accept_failed", error=type(exc).__name__, conversation=turn.place.conversation_id
            )

    async def _answer_privately(self, response_url: str, text: str) -> None:
        if not response_url:
            return
        try:
            await webhook_client(response_url).send(
                text=text, response_type="ephemeral", replace_original=False, unfurl_links=False
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary
            self._log.error("reply_undeliverable", via="response_url", error=type(exc).__name__)

    async def _with_name(self, turn: Turn, client: AsyncWebClient) -> Turn:
        """``turn`` with its author's display name from ``users.info`` (cached), when one can be had.

        A slash command carries the legacy username (``user_name``): kept only when the lookup finds none.
        """
        if not self.config.display_names:
            return turn
        name = await self.names.lookup(client, turn.place.workspace, turn.author.id)
        if not name or name == turn.author.display_name:
            return turn
        return replace(turn, author=replace(turn.author, display_name=name))

    async def _dispatch(self, turn: Turn, *, assistant: bool = False) -> DispatchOutcome:
        dispatched = await self.deps.dispatcher.dispatch(
            turn, route_for(target_for(turn, assistant=assistant))
        )
        self.outcomes[dispatched.outcome.value] += 1
        return dispatched.outcome

    async def _joined(self, turn: Turn, tlog: FilteringBoundLogger) -> bool:
        try:
            return await self.state.in_thread(turn.place)
        except ParleyError as exc:  # Redis trouble: treat as "not joined"; the engine reports its own
            tlog.warning("slack_thread_mark_unreadable", error=str(exc))
            return False

    async def _greet_assistant_thread(self, client: AsyncWebClient, channel: str, thread_ts: str) -> None:
        persona = self.deps.bot.persona(None)
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

    async def _resume_from_button(self, turn: Turn, response_url: str) -> None:
        try:
            await self.deps.resume(turn)
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

    @contextlib.asynccontextmanager
    async def _start_step(self, credential: str) -> AsyncIterator[None]:
        """One start-up call to Slack, guarded the same way: a refusal names the credential, a network
        failure the URL (one clear line each, no secret in it)."""
        try:
            yield
        except SlackApiError as exc:
            raise ConfigError(f"{credential} was rejected by Slack ({slack_error_code(exc)})") from None
        except (SlackClientError, OSError) as exc:
            url = self.settings.slack_api_url
            raise AdapterError(f"cannot reach Slack at SLACK_API_URL={url}: {exc}") from None

    async def verify(self) -> None:
        """Fail loudly at start-up: the tokens must work."""
        if self.mode is not Mode.OAUTH:
            async with self._start_step("SLACK_BOT_TOKEN"):
                await self.client.auth_test()
        if self.mode is Mode.SOCKET:
            assert self.settings.slack_app_token is not None
            probe = web_client(None, self.settings.slack_api_url)
            async with self._start_step("SLACK_APP_TOKEN"):
                await probe.apps_connections_open(app_token=self.settings.slack_app_token.get_secret_value())

    async def serve(self) -> None:
        """Verify the credentials, connect (Socket Mode), then serve until cancelled."""
        if self._closed:
            raise RuntimeError("the Slack adapter is closed")
        await self.verify()
        try:
            if self.mode is Mode.SOCKET:
                assert self.settings.slack_app_token is not None
                handler = AsyncSocketModeHandler(
                    self.app,
                    app_token=self.settings.slack_app_token.get_secret_value(),
                    web_client=web_client(None, self.settings.slack_api_url),
                    logger=logging.getLogger("parley.slack.socket"),
                )
                self._socket = handler
                async with self._start_step("SLACK_APP_TOKEN"):
                    await handler.connect_async()  # type: ignore[no-untyped-call]  # bolt leaves it unannotated
                self._log.info("slack_socket_connected")
            else:
                self._log.info("slack_http_ready", path=EVENTS_PATH, oauth=self.mode is Mode.OAUTH)
            self.ready.set()
            await asyncio.Event().wait()  # until cancelled
        finally:
            self.ready.clear()
            await self._stop_socket()

    async def _readiness(self) -> str | None:
        if not self.ready.is_set():
            return "slack: not connected"
        if self._socket is not None and not await self._socket.client.is_connected():
            return "slack: Socket Mode connection lost (reconnecting)"
        return None

    async def _http_events(self, request: web.Request) -> web.StreamResponse:
        if self._closed:
            return web.Response(status=503, text="shutting down")  # Slack retries elsewhere
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def _http_oauth(self, request: web.Request) -> web.StreamResponse:
        flow = self.app.oauth_flow
        if flow is None:
            return web.Response(status=404)
        if request.path == INSTALL_PATH and not await self.install_limit.allow(request.remote or ""):
            self._log.info("slack_install_rate_limited")
            return web.Response(status=429, text="Too many install attempts: try again in a minute.")
        bolt_request = await to_bolt_request(request)
        if request.path == INSTALL_PATH:
            bolt_response = await flow.handle_installation(bolt_request)
        else:
            bolt_response = await flow.handle_callback(bolt_request)
        return await to_aiohttp_response(bolt_response)

    async def _stop_socket(self) -> None:
        handler, self._socket = self._socket, None
        if handler is None:
            return
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
        """Stop taking events (Socket Mode disconnects; HTTP routes answer 503 once closed) and let the
        accept tasks finish for ``shutdown_grace`` seconds. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.ready.clear()
        await self._stop_socket()
        await self.tasks.aclose(grace=self.config.shutdown_grace)
        await self.client.aclose()
