"""A fake Discord on loopback: REST API (v10) and gateway websocket in one aiohttp server on port 0.

Point discord.py at it with ``discord.http.Route.BASE = fake.api_url``; the gateway URL is served by
``GET /gateway/bot`` and in READY's ``resume_gateway_url``.

What it mimics, because discord.py depends on it:

- responses carry ``Content-Type: application/json`` exactly (discord.py parses nothing else as JSON);
- a 429 carries ``retry_after`` in the body and a ``Via`` header (without ``Via`` discord.py takes it for a
  Cloudflare ban and does not retry);
- the gateway speaks HELLO / IDENTIFY / READY / GUILD_CREATE / heartbeats / RESUME with zlib-stream frames;
- without the MESSAGE_CONTENT intent, guild messages that do not mention the bot arrive with empty content,
  and events of intents the client did not ask for are not sent;
- the bot's own messages come back as MESSAGE_CREATE;
- an interaction must be answered within 3 s (else 404 "Unknown interaction"), its token then lives
  ``interaction_token_ttl`` seconds (15 minutes by default; else 401 "Invalid Webhook Token");
- messages over 2,000 characters and empty messages are refused with 400, like Discord does;
- message flags: SUPPRESS_EMBEDS (4) is set by the request that creates a message and replaced by an edit
  that sends ``flags`` (kept by one that does not); a message whose final flags lack it and whose content
  has a link Discord would autolink is recorded in :attr:`FakeDiscord.unfurls` (Discord would fetch it).

Tests read every REST call (:attr:`FakeDiscord.calls`), inject faults (:meth:`FakeDiscord.inject`) and
dispatch gateway events (:meth:`FakeDiscord.dispatch` and the helpers built on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_default
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord import payloads as p
from tests.fakes.discord.gateway import (
    DIRECT_MESSAGES,
    GUILD_MESSAGES,
    GUILDS,
    HEARTBEAT,
    HEARTBEAT_ACK,
    HELLO,
    IDENTIFY,
    INVALID_SESSION,
    MESSAGE_CONTENT,
    RESUME,
    GatewaySession,
    Identify,
    compressor_for,
    now,
    shard_of,
)

API_PREFIX = "/api/v10"
MAX_CONTENT = 2000
SUPPRESS_EMBEDS = 1 << 2
EPHEMERAL = 1 << 6
LOADING = 1 << 7
VOICE_MESSAGE = 1 << 13

_MENTION_RE = re.compile(r"<@!?(\d+)>")
_ROLE_RE = re.compile(r"<@&(\d+)>")


@dataclass(frozen=True)
class Call:
    """One REST request the bot made."""

    method: str
    path: str  # relative to the API base, e.g. "/channels/123/messages"
    route: str  # the route template, e.g. "POST /channels/{channel_id}/messages"
    query: dict[str, str]
    json: Any
    at: float  # time.monotonic() when it arrived
    status: int
    authorized: bool


@dataclass(frozen=True)
class Upload:
    """A file the bot uploaded with a message (multipart ``files[n]``)."""

    channel_id: str
    message_id: str
    filename: str
    data: bytes
    content_type: str


def parse_multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """discord.py's multipart body -> its ``payload_json`` plus ``_files``: [(filename, bytes, type)]."""
    parsed = BytesParser(policy=email_default).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    body: dict[str, Any] = {}
    files: list[tuple[str, bytes, str]] = []
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if name == "payload_json":
            body = json.loads(data)
        elif part.get_filename():
            files.append((str(part.get_filename()), bytes(data), part.get_content_type()))
    body["_files"] = files
    return body


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    retry_after: float
    via: bool
    body: dict[str, Any] | None
    hits: int = 0


@dataclass
class Ping:
    """Somebody a message would really notify, given its content and allowed_mentions."""

    message_id: str
    target: str  # "everyone", "here", "user:<id>", "role:<id>", "replied:<id>"


@dataclass
class Unfurl:
    """A link Discord would preview: autolinked (not in ``<...>``, not in code) in a message without
    SUPPRESS_EMBEDS."""

    message_id: str
    url: str


def autolinks(content: str) -> list[str]:
    """The links Discord's autolinker finds: ``http://`` or ``https://`` in any case, wherever it starts
    (even glued to a word or a slash), unless it is inside an ``<...>`` autolink or inline/block code."""
    found: list[str] = []
    text = re.sub(r"```.*?```|`[^`\n]*`", lambda m: " " * len(m.group(0)), content, flags=re.DOTALL)
    lower = text.lower()
    i = 0
    while True:
        starts = [j for j in (lower.find("http://", i), lower.find("https://", i)) if j >= 0]
        if not starts:
            return found
        start = min(starts)
        end = start
        while end < len(text) and not text[end].isspace() and text[end] not in "<>":
            end += 1
        opened = text.rfind("<", 0, start)
        wrapped = opened >= 0 and not any(c.isspace() or c == ">" for c in text[opened:start])
        wrapped = wrapped and end < len(text) and text[end] == ">"
        if not wrapped:
            found.append(text[start:end])
        i = end if end > start else start + 1


@dataclass
class InteractionState:
    payload: dict[str, Any]
    dispatched_at: float
    responded_at: float | None = None
    response_type: int | None = None
    ephemeral: bool = False
    original_id: str | None = None
    followups: list[str] = field(default_factory=list)


_Handler = Callable[..., Awaitable[tuple[int, Any]]]


class FakeDiscord:
    """A small, stateful Discord: one bot, one application, guilds with channels and threads."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",  # noqa: S107 - the fake's own test token
        heartbeat_interval_ms: int = 41_250,
        shards: int = 1,
        echo_own_messages: bool = True,
        interaction_token_ttl: float = 15 * 60,
        interaction_deadline: float = 3.0,
        max_concurrency: int = 1,
        session_starts_remaining: int = 999,
    ) -> None:
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.recommended_shards = shards
        self.echo_own_messages = echo_own_messages
        self.interaction_token_ttl = interaction_token_ttl
        self.interaction_deadline = interaction_deadline
        self.max_concurrency = max_concurrency
        self.session_starts_remaining = session_starts_remaining

        self.app_id = p.snowflake()
        self.bot = p.user(self.app_id, "arcade", bot=True)
        self.owner = p.user(None, "owner", global_name="The Owner")
        self.alice = p.user(None, "alice", global_name="Alice")
        self.bob = p.user(None, "bob", global_name="Bob")
        self.other_bot = p.user(None, "otherbot", bot=True)

        self.guild_id = p.snowflake()
        self.general = p.text_channel(self.guild_id, "general")
        self.random = p.text_channel(self.guild_id, "random")
        self.mods = p.text_channel(self.guild_id, "moderators")  # where flagged turns are reported
        self.bot_thread = p.thread_channel(self.guild_id, self.general["id"], self.app_id, "arcade's thread")
        self.guilds: dict[str, dict[str, Any]] = {
            self.guild_id: p.guild(
                self.guild_id,
                "Arcade Hall",
                owner_id=self.owner["id"],
                channels=[self.general, self.random, self.mods],
                threads=[self.bot_thread],
                members=[p.member(self.bot)],
            )
        }
        self.channels: dict[str, dict[str, Any]] = {
            c["id"]: c for c in (self.general, self.random, self.mods, self.bot_thread)
        }
        self.messages: dict[str, dict[str, Any]] = {}
        self.deleted: list[dict[str, Any]] = []
        self.interactions: dict[str, InteractionState] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}  # "global" or guild id -> definitions
        # guild id -> command (or application) id -> that target's permission overwrites in the guild
        self.command_permissions: dict[str, dict[str, list[dict[str, Any]]]] = {}

        self.calls: list[Call] = []
        self.cdn: dict[
            str, tuple[bytes, str]
        ] = {}  # attachment id -> (bytes, content type), served as the CDN
        self.cdn_downloads: list[str] = []  # attachment ids fetched
        self.uploads: list[Upload] = []  # files the bot uploaded (multipart message posts)
        self.pings: list[Ping] = []
        self.unfurls: list[Unfurl] = []
        self.identifies: list[Identify] = []
        self.faults: list[Fault] = []
        self.sessions: dict[str, GatewaySession] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._routes = self._build_routes()

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        app.router.add_get("/attachments/{attachment_id}/{filename}", self._cdn)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def aclose(self) -> None:
        for session in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await session.ws.close()
        self.sessions.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ test controls

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int,
        *,
        times: int = 1,
        retry_after: float = 0.3,
        via: bool = True,
        body: dict[str, Any] | None = None,
    ) -> Fault:
        """Answer the next ``times`` matching calls with ``status`` (429s carry ``retry_after`` and Via)."""
        fault = Fault(method.upper(), re.compile(path_regex), status, times, retry_after, via, body)
        self.faults.append(fault)
        return fault

    def calls_to(self, method: str, path_regex: str = ".*", *, ok: bool | None = None) -> list[Call]:
        rx = re.compile(path_regex)
        return [
            c
            for c in self.calls
            if c.method == method.upper()
            and rx.fullmatch(c.path)
            and (ok is None or (200 <= c.status < 300) == ok)
        ]

    async def wait_for(self, predicate: Callable[[], Any], within: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy: re-checked after every REST call and gateway change, and
        every 50 ms (for conditions outside the fake, such as a log line)."""
        async with asyncio.timeout(within), self._changed:
            while not (value := predicate()):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)
            return value

    async def wait_for_calls(
        self,
        method: str,
        path_regex: str = ".*",
        *,
        count: int = 1,
        ok: bool | None = None,
        within: float = 10.0,
    ) -> list[Call]:
        result: list[Call] = await self.wait_for(
            lambda: calls if len(calls := self.calls_to(method, path_regex, ok=ok)) >= count else None,
            within,
        )
        return result

    async def wait_ready(self, sessions: int = 1, within: float = 10.0) -> None:
        await self.wait_for(
            lambda: sum(1 for s in self.sessions.values() if s.ready.is_set()) >= sessions, within
        )

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def drop_connections(self, code: int = 4000) -> None:
        """Close every gateway connection (the client should reconnect, resuming if it can)."""
        for session in list(self.sessions.values()):
            await session.ws.close(code=code, message=b"fake drop")

    # ------------------------------------------------------------------ gateway events

    def _targets(self, guild_id: str | None) -> Iterator[GatewaySession]:
        for session in list(self.sessions.values()):
            if not session.ready.is_set() or session.ws.closed:
                continue
            shard_id, count = session.shard
            if guild_id is None and shard_id != 0:
                continue  # DMs go to shard 0
            if guild_id is not None and shard_of(guild_id, count) != shard_id:
                continue
            yield session

    async def dispatch(self, event: str, data: dict[str, Any], *, guild_id: str | None = None) -> int:
        """Send a DISPATCH to the sessions that would receive it; returns how many did."""
        gid = guild_id or data.get("guild_id")
        sent = 0
        for session in self._targets(gid):
            payload = self._filter_for(session, event, data)
            if payload is None:
                continue
            await session.dispatch(event, payload)
            sent += 1
        return sent

    def _filter_for(self, session: GatewaySession, event: str, data: dict[str, Any]) -> dict[str, Any] | None:
        if event in {"MESSAGE_CREATE", "MESSAGE_UPDATE"}:
            in_guild = "guild_id" in data
            if not session.has(GUILD_MESSAGES if in_guild else DIRECT_MESSAGES):
                return None
            mentioned = any(u["id"] == self.app_id for u in data.get("mentions", []))
            own = data["author"]["id"] == self.app_id
            if in_guild and not own and not mentioned and not session.has(MESSAGE_CONTENT):
                # The privileged intent is missing: Discord blanks what the bot may not read.
                return {**data, "content": "", "embeds": [], "attachments": [], "components": []}
        elif event.startswith(("GUILD_", "THREAD_", "CHANNEL_")) and not session.has(GUILDS):
            return None
        return data

    async def send_message(
        self,
        text: str,
        *,
        author: dict[str, Any] | None = None,
        channel: dict[str, Any] | None = None,
        mention_bot: bool = False,
        reply_to: dict[str, Any] | None = None,
        attachments: list[tuple[str, bytes, str]] | None = None,
        flags: int = 0,
    ) -> dict[str, Any]:
        """A user posts in a guild channel or thread; returns the MESSAGE_CREATE payload. ``attachments``:
        ``(filename, bytes, content type)`` files, served at the fake CDN's URLs. ``flags``: message flags
        (1 << 13: a voice message, whose audio attachment then carries ``duration_secs`` and a waveform)."""
        author = author or self.alice
        channel = channel or self.general
        content = f"<@{self.app_id}> {text}" if mention_bot else text
        mentions = [self.bot] if mention_bot else []
        if reply_to is not None and reply_to["author"]["id"] == self.app_id:
            mentions = [*mentions, self.bot] if not mention_bot else mentions
        data = p.message(
            channel_id=channel["id"],
            guild_id=self.guild_id,
            author=author,
            content=content,
            mentions=mentions,
            referenced=reply_to,
            author_member=p.member(None),
        )
        data["attachments"] = [self.attach(*a) for a in attachments or []]
        if flags:
            data["flags"] = flags
        if flags & VOICE_MESSAGE:
            for a in data["attachments"]:
                a["duration_secs"] = 1.0
                a["waveform"] = "AAAA"
        self.messages[data["id"]] = data
        delivered = await self.dispatch("MESSAGE_CREATE", data)
        assert delivered, "no gateway session received the message (not connected, or intents missing)"
        return data

    async def send_dm(self, text: str, *, author: dict[str, Any] | None = None) -> dict[str, Any]:
        author = author or self.alice
        channel_id = self.dm_channel_for(author)["id"]
        data = p.message(channel_id=channel_id, author=author, content=text)
        self.messages[data["id"]] = data
        delivered = await self.dispatch("MESSAGE_CREATE", data)
        assert delivered, "no gateway session received the DM"
        return data

    def attach(self, filename: str, data: bytes, content_type: str, description: str = "") -> dict[str, Any]:
        """An attachment object whose URL the fake CDN serves."""
        aid = p.snowflake()
        self.cdn[aid] = (data, content_type)
        url = f"{self.base_url}/attachments/{aid}/{filename}"
        out = {"id": aid, "filename": filename, "size": len(data), "url": url, "proxy_url": url}
        out["content_type"] = content_type
        if description:
            out["description"] = description
        return out

    async def _cdn(self, request: web.Request) -> web.Response:
        aid = request.match_info["attachment_id"]
        if aid not in self.cdn:
            return web.Response(status=404)
        self.cdn_downloads.append(aid)
        data, content_type = self.cdn[aid]
        return web.Response(body=data, content_type=content_type)

    def dm_channel_for(self, user: dict[str, Any]) -> dict[str, Any]:
        for channel in self.channels.values():
            if channel["type"] == p.DM and channel["recipients"][0]["id"] == user["id"]:
                return channel
        channel = p.dm_channel(p.snowflake(), user)
        self.channels[channel["id"]] = channel
        return channel

    async def create_thread(
        self, *, owner: dict[str, Any], parent: dict[str, Any] | None = None, name: str = "a thread"
    ) -> dict[str, Any]:
        parent = parent or self.general
        thread = p.thread_channel(self.guild_id, parent["id"], owner["id"], name)
        self.channels[thread["id"]] = thread
        self.guilds[self.guild_id]["threads"].append(thread)
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return thread

    async def add_text_channel(self, name: str) -> dict[str, Any]:
        """A new text channel in the guild: part of GUILD_CREATE for later sessions, CHANNEL_CREATE for
        the connected ones (the load bench gives each of its users a channel of their own)."""
        channel = p.text_channel(self.guild_id, name)
        self.channels[channel["id"]] = channel
        self.guilds[self.guild_id]["channels"].append(channel)
        await self.dispatch("CHANNEL_CREATE", channel)
        return channel

    async def slash(
        self,
        name: str,
        options: dict[str, str | int | bool] | None = None,
        *,
        author: dict[str, Any] | None = None,
        channel: dict[str, Any] | None = None,
        permissions: int = p.MEMBER_DEFAULT,
        dm: bool = False,
    ) -> dict[str, Any]:
        """A user runs a slash command; returns the INTERACTION_CREATE payload."""
        author = author or self.alice
        if dm:
            channel = self.dm_channel_for(author)
        channel = channel or self.general
        opts = [
            p.option(k, v, 5 if isinstance(v, bool) else 4 if isinstance(v, int) else 3)
            for k, v in (options or {}).items()
        ]
        data = p.slash_command(
            application_id=self.app_id,
            name=name,
            user_data=author,
            channel=channel,
            guild_id=None if dm else self.guild_id,
            options=opts,
            permissions=permissions,
        )
        self.interactions[data["id"]] = InteractionState(data, now())
        delivered = await self.dispatch("INTERACTION_CREATE", data, guild_id=None if dm else self.guild_id)
        assert delivered, "no gateway session received the interaction"
        return data

    async def click(
        self, message: dict[str, Any], custom_id: str, *, author: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A user clicks a button on ``message``; returns the INTERACTION_CREATE (component) payload."""
        author = author or self.alice
        channel = self.channels[message["channel_id"]]
        data = p.component_click(
            application_id=self.app_id,
            custom_id=custom_id,
            message=message,
            user_data=author,
            channel=channel,
            guild_id=message.get("guild_id"),
        )
        self.interactions[data["id"]] = InteractionState(data, now())
        delivered = await self.dispatch("INTERACTION_CREATE", data, guild_id=message.get("guild_id"))
        assert delivered, "no gateway session received the click"
        return data

    async def restrict_command(
        self, name: str | None, overwrites: list[dict[str, Any]], *, guild_id: str | None = None
    ) -> None:
        """An admin sets a command's permissions in Server Settings > Integrations (``name`` None: the whole
        application's): ``overwrites`` like ``{"id": role/user/channel id, "type": 1|2|3, "permission":
        bool}``. Discord stores them and tells the bot with APPLICATION_COMMAND_PERMISSIONS_UPDATE."""
        guild_id = guild_id or self.guild_id
        if name is None:
            target = self.app_id
        else:
            registered = self.commands.get(guild_id, []) + self.commands.get("global", [])
            target = next(c["id"] for c in registered if c["name"] == name)
        self.command_permissions.setdefault(guild_id, {})[target] = overwrites
        entry = {"id": target, "application_id": self.app_id, "guild_id": guild_id, "permissions": overwrites}
        await self.dispatch("APPLICATION_COMMAND_PERMISSIONS_UPDATE", entry, guild_id=guild_id)

    def buttons(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        return [c for row in message.get("components") or [] for c in row.get("components", [])]

    def bot_messages(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        """Messages the bot posted (channel messages and interaction responses), oldest first."""
        found = [
            m
            for m in self.messages.values()
            if m["author"]["id"] == self.app_id and (channel_id is None or m["channel_id"] == channel_id)
        ]
        return sorted(found, key=lambda m: int(m["id"]))

    # ------------------------------------------------------------------ gateway endpoint

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        compress = compressor_for(dict(request.query))
        await ws.prepare(request)
        session = GatewaySession(ws=ws, compress=compress)
        await session.send({"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                await self._on_frame(session, frame)
        finally:
            if self.sessions.get(session.session_id) is session:
                session.ready.clear()
            await self._notify()
        return ws

    async def _on_frame(self, session: GatewaySession, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            session.heartbeats += 1
            await session.send({"op": HEARTBEAT_ACK})
        elif op == IDENTIFY:
            await self._identify(session, data)
        elif op == RESUME:
            await self._resume(session, data)
        # PRESENCE_UPDATE and REQUEST_GUILD_MEMBERS need no answer here.

    async def _identify(self, session: GatewaySession, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
        shard = tuple(data.get("shard") or (0, 1))
        self.identifies.append(
            Identify(data["token"], int(data.get("intents", 0)), (shard[0], shard[1]), now())
        )
        session.session_id = secrets.token_hex(16)
        session.shard = (int(shard[0]), int(shard[1]))
        session.intents = int(data.get("intents", 0))
        self.sessions[session.session_id] = session
        mine = [g for g in self.guilds.values() if shard_of(g["id"], session.shard[1]) == session.shard[0]]
        await session.dispatch(
            "READY",
            {
                "v": 10,
                "user": self.bot,
                "guilds": [{"id": g["id"], "unavailable": True} for g in mine],
                "session_id": session.session_id,
                "resume_gateway_url": self.gateway_url,
                "shard": list(session.shard),
                "application": {"id": self.app_id, "flags": 0},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "user_settings": {},
            },
        )
        if session.has(GUILDS):
            for g in mine:
                await session.dispatch("GUILD_CREATE", g)
        session.ready.set()
        await self._notify()

    async def _resume(self, session: GatewaySession, data: dict[str, Any]) -> None:
        old = self.sessions.get(data.get("session_id", ""))
        if old is None or data.get("token") != self.token:
            await session.send({"op": INVALID_SESSION, "d": False})
            return
        session.session_id, session.shard, session.intents = old.session_id, old.shard, old.intents
        session.seq = int(data.get("seq") or old.seq)
        self.sessions[session.session_id] = session
        await session.dispatch("RESUMED", {})
        session.ready.set()
        await self._notify()

    # ------------------------------------------------------------------ REST endpoint

    def _build_routes(self) -> list[tuple[str, str, re.Pattern[str], _Handler, bool]]:
        table: list[tuple[str, str, _Handler, bool]] = [
            ("GET", "/users/@me", self._get_me, True),
            ("GET", "/oauth2/applications/@me", self._get_app, True),
            ("GET", "/gateway/bot", self._get_gateway_bot, True),
            ("GET", "/gateway", self._get_gateway, False),
            ("POST", "/users/@me/channels", self._open_dm, True),
            ("GET", "/channels/{channel_id}", self._get_channel, True),
            ("POST", "/channels/{channel_id}/typing", self._typing, True),
            ("POST", "/channels/{channel_id}/messages", self._post_message, True),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message, True),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_message, True),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._thread_from_message, True),
            ("POST", "/channels/{channel_id}/threads", self._thread_without_message, True),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._interaction_callback, False),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/@original", self._edit_original, False),
            ("GET", "/webhooks/{app_id}/{token}/messages/@original", self._get_original, False),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/@original", self._delete_original, False),
            ("POST", "/webhooks/{app_id}/{token}", self._followup, False),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._edit_followup, False),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._delete_followup, False),
            ("GET", "/applications/{app_id}/commands", self._get_commands, True),
            ("PUT", "/applications/{app_id}/commands", self._put_commands, True),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands, True),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands, True),
            (
                "GET",
                "/applications/{app_id}/guilds/{guild_id}/commands/permissions",
                self._get_command_permissions,
                True,
            ),
        ]
        compiled = []
        for method, template, handler, auth in table:
            rx = re.escape(template)
            rx = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", rx)
            compiled.append((method, template, re.compile(rx), handler, auth))
        return compiled

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body: Any = None
        raw = await request.read()
        if raw:
            if request.headers.get("Content-Type", "").startswith("application/json"):
                body = json.loads(raw)
            elif request.headers.get("Content-Type", "").startswith("multipart/form-data"):
                body = parse_multipart(request.headers["Content-Type"], raw)
            else:
                body = {"_raw": raw.decode(errors="replace")}
        query = dict(request.query)
        authorized = request.headers.get("Authorization") == f"Bot {self.token}"

        route, handler, params, needs_auth = "UNKNOWN", None, {}, False
        for method, template, rx, fn, auth in self._routes:
            m = rx.fullmatch(path)
            if m and method == request.method:
                route, handler, params, needs_auth = f"{method} {template}", fn, m.groupdict(), auth
                break

        extra_headers: dict[str, str] = {}
        fault = self._fault_for(request.method, path)
        if fault is not None:
            status, out = fault.status, fault.body
            if status == 429:
                out = out or {
                    "message": "You are being rate limited.",
                    "retry_after": fault.retry_after,
                    "global": False,
                }
                extra_headers["Retry-After"] = str(fault.retry_after)
                if fault.via:
                    extra_headers["Via"] = "1.1 google"
            elif out is None:
                out = {"message": _REASONS.get(status, "Error"), "code": _CODES.get(status, 0)}
        elif handler is None:
            status, out = 404, {"message": "404: Not Found", "code": 0}
        elif needs_auth and not authorized:
            status, out = 401, {"message": "401: Unauthorized", "code": 0}
        else:
            status, out = await handler(body=body, query=query, **params)

        self.calls.append(Call(request.method, path, route, query, body, now(), status, authorized))
        await self._notify()
        return _json_response(status, out, extra_headers)

    def _fault_for(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.hits < fault.times and fault.method == method and fault.pattern.fullmatch(path):
                fault.hits += 1
                return fault
        return None

    # -- login

    async def _get_me(self, **_: Any) -> tuple[int, Any]:
        return 200, {**self.bot, "verified": True, "mfa_enabled": False, "flags": 0, "email": None}

    async def _get_app(self, **_: Any) -> tuple[int, Any]:
        return 200, p.application(self.app_id, self.owner)

    async def _get_gateway_bot(self, **_: Any) -> tuple[int, Any]:
        return 200, {
            "url": self.gateway_url,
            "shards": self.recommended_shards,
            "session_start_limit": {
                "total": 1000,
                "remaining": self.session_starts_remaining,
                "reset_after": 86_400_000,
                "max_concurrency": self.max_concurrency,
            },
        }

    async def _get_gateway(self, **_: Any) -> tuple[int, Any]:
        return 200, {"url": self.gateway_url}

    # -- channels and messages

    async def _open_dm(self, *, body: Any, **_: Any) -> tuple[int, Any]:
        for u in (self.owner, self.alice, self.bob):
            if u["id"] == str(body.get("recipient_id")):
                return 200, self.dm_channel_for(u)
        return 400, {"message": "Invalid Recipient(s)", "code": 50033}

    async def _get_channel(self, *, channel_id: str, **_: Any) -> tuple[int, Any]:
        channel = self.channels.get(channel_id)
        return (200, channel) if channel else (404, {"message": "Unknown Channel", "code": 10003})

    async def _typing(self, *, channel_id: str, **_: Any) -> tuple[int, Any]:
        if channel_id not in self.channels:
            return 404, {"message": "Unknown Channel", "code": 10003}
        return 204, None

    def _validate_content(self, body: Any, *, editing: bool = False) -> tuple[int, Any] | None:
        content = body.get("content") if isinstance(body, dict) else None
        if content is not None and len(content) > MAX_CONTENT:
            return 400, {
                "message": "Invalid Form Body",
                "code": 50035,
                "errors": {
                    "content": {
                        "_errors": [
                            {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
                        ]
                    }
                },
            }
        if (
            not editing
            and not content
            and not (isinstance(body, dict) and (body.get("embeds") or body.get("_files")))
        ):
            return 400, {"message": "Cannot send an empty message", "code": 50006}
        return None

    def _uploaded(self, message: dict[str, Any], body: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for filename, data, content_type in body.get("_files") or []:
            self.uploads.append(Upload(message["channel_id"], message["id"], filename, data, content_type))
            out.append(self.attach(filename, data, content_type))
        return out

    def _record_pings(self, message: dict[str, Any], body: dict[str, Any]) -> None:
        """Who Discord would notify for this content, honouring allowed_mentions (absent = parse all)."""
        content = message.get("content") or ""
        allowed = body.get("allowed_mentions")
        parse = {"everyone", "users", "roles"} if allowed is None else set(allowed.get("parse", []))
        users = set() if allowed is None else set(map(str, allowed.get("users", [])))
        roles = set() if allowed is None else set(map(str, allowed.get("roles", [])))
        mid = message["id"]
        if "everyone" in parse:
            for word in ("everyone", "here"):
                if f"@{word}" in content:
                    self.pings.append(Ping(mid, word))
        for uid in _MENTION_RE.findall(content):
            if "users" in parse or uid in users:
                self.pings.append(Ping(mid, f"user:{uid}"))
        for rid in _ROLE_RE.findall(content):
            if "roles" in parse or rid in roles:
                self.pings.append(Ping(mid, f"role:{rid}"))
        ref = body.get("message_reference")
        if ref and (allowed is None or allowed.get("replied_user", True)):
            target = self.messages.get(str(ref.get("message_id")))
            if target is not None:
                self.pings.append(Ping(mid, f"replied:{target['author']['id']}"))

    async def _post_message(self, *, channel_id: str, body: Any, **_: Any) -> tuple[int, Any]:
        channel = self.channels.get(channel_id)
        if channel is None:
            return 404, {"message": "Unknown Channel", "code": 10003}
        if (err := self._validate_content(body)) is not None:
            return err
        referenced = None
        ref = body.get("message_reference")
        if ref:
            referenced = self.messages.get(str(ref.get("message_id")))
            if referenced is None and ref.get("fail_if_not_exists", True):
                return 400, {"message": "Invalid Form Body", "code": 50035}
        message = p.message(
            channel_id=channel_id,
            guild_id=channel.get("guild_id"),
            author=self.bot,
            content=body.get("content") or "",
            referenced=referenced,
            author_member=p.member(None),
        )
        message["embeds"] = body.get("embeds") or []
        message["attachments"] = self._uploaded(message, body)
        message["components"] = body.get("components") or []
        message["flags"] = int(body.get("flags") or 0) & SUPPRESS_EMBEDS
        self.messages[message["id"]] = message
        self._record_pings(message, body)
        self._record_unfurls(message)
        if self.echo_own_messages:
            await self.dispatch("MESSAGE_CREATE", message)
        return 200, message

    async def _get_message(self, *, channel_id: str, message_id: str, **_: Any) -> tuple[int, Any]:
        message = self.messages.get(message_id)
        if message is None or message["channel_id"] != channel_id:
            return 404, {"message": "Unknown Message", "code": 10008}
        return 200, message

    async def _edit_message(
        self, *, channel_id: str, message_id: str, body: Any, **_: Any
    ) -> tuple[int, Any]:
        message = self.messages.get(message_id)
        if message is None or message["channel_id"] != channel_id:
            return 404, {"message": "Unknown Message", "code": 10008}
        if message["author"]["id"] != self.app_id:
            return 403, {"message": "Cannot edit a message authored by another user", "code": 50005}
        return self._apply_edit(message, body)

    def _apply_edit(self, message: dict[str, Any], body: Any) -> tuple[int, Any]:
        if (err := self._validate_content(body, editing=True)) is not None:
            return err
        if "content" in body:
            message["content"] = body["content"] or ""
        if "components" in body:  # as Discord: an edit with components replaces them ([] removes them)
            message["components"] = body["components"] or []
        message["edited_timestamp"] = p.iso_now()
        flags = message.get("flags", 0) & ~LOADING
        if body.get("flags") is not None:  # only SUPPRESS_EMBEDS can be set or unset by an edit
            flags = (flags & ~SUPPRESS_EMBEDS) | (int(body["flags"]) & SUPPRESS_EMBEDS)
        message["flags"] = flags
        self._record_pings(message, body)
        self._record_unfurls(message)
        return 200, message

    def _record_unfurls(self, message: dict[str, Any]) -> None:
        if message.get("flags", 0) & SUPPRESS_EMBEDS:
            return
        for url in autolinks(message.get("content") or ""):
            self.unfurls.append(Unfurl(message["id"], url))

    async def _thread_from_message(
        self, *, channel_id: str, message_id: str, body: Any, **_: Any
    ) -> tuple[int, Any]:
        parent = self.channels.get(channel_id)
        if parent is None or message_id not in self.messages:
            return 404, {"message": "Unknown Message", "code": 10008}
        thread = p.thread_channel(
            self.guild_id, channel_id, self.app_id, body.get("name", "thread"), message_id
        )
        self.channels[thread["id"]] = thread
        self.guilds[self.guild_id]["threads"].append(thread)
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return 201, thread

    async def _thread_without_message(self, *, channel_id: str, body: Any, **_: Any) -> tuple[int, Any]:
        if channel_id not in self.channels:
            return 404, {"message": "Unknown Channel", "code": 10003}
        thread = p.thread_channel(self.guild_id, channel_id, self.app_id, body.get("name", "thread"))
        self.channels[thread["id"]] = thread
        self.guilds[self.guild_id]["threads"].append(thread)
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return 201, thread

    # -- interactions

    def _interaction_by_token(self, token: str) -> InteractionState | None:
        for state in self.interactions.values():
            if state.payload["token"] == token:
                return state
        return None

    async def _interaction_callback(
        self, *, interaction_id: str, token: str, body: Any, query: dict[str, str], **_: Any
    ) -> tuple[int, Any]:
        state = self.interactions.get(interaction_id)
        if state is None or state.payload["token"] != token:
            return 404, {"message": "Unknown interaction", "code": 10062}
        if now() - state.dispatched_at > self.interaction_deadline:
            return 404, {"message": "Unknown interaction", "code": 10062}
        if state.responded_at is not None:
            return 400, {"message": "Interaction has already been acknowledged.", "code": 40060}
        kind = int(body["type"])
        data = body.get("data") or {}
        flags = int(data.get("flags") or 0)
        state.responded_at = now()
        state.response_type = kind
        state.ephemeral = bool(flags & EPHEMERAL)
        message = None
        if kind in (4, 5):  # CHANNEL_MESSAGE_WITH_SOURCE, DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
            payload = state.payload
            message = p.message(
                channel_id=payload["channel_id"],
                guild_id=payload.get("guild_id"),
                author=self.bot,
                content=data.get("content", "") if kind == 4 else "",
                author_member=p.member(None),
                webhook_id=self.app_id,
                message_type=20,  # CHAT_INPUT_COMMAND
            )
            message["flags"] = (flags & (EPHEMERAL | SUPPRESS_EMBEDS)) | (LOADING if kind == 5 else 0)
            message["interaction_metadata"] = {
                "id": payload["id"],
                "type": 2,
                "user": payload.get("member", {}).get("user") or payload.get("user"),
                "authorizing_integration_owners": payload.get("authorizing_integration_owners", {}),
            }
            self.messages[message["id"]] = message
            state.original_id = message["id"]
            if kind == 4:
                self._record_pings(message, data)
                self._record_unfurls(message)
        if kind == 7 and "message" in state.payload:  # UPDATE_MESSAGE: a component's message is edited
            clicked = self.messages.get(state.payload["message"]["id"])
            if clicked is not None:
                if "components" in data:
                    clicked["components"] = data["components"] or []
                if "content" in data:
                    clicked["content"] = data["content"] or ""
        if query.get("with_response") not in ("1", "true", "True"):
            return 204, None
        result: dict[str, Any] = {
            "interaction": {
                "id": interaction_id,
                "type": state.payload["type"],
                "response_message_id": state.original_id,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": state.ephemeral,
            },
            "resource": {"type": kind, **({"message": message} if message else {})},
        }
        return 200, result

    def _check_token(self, app_id: str, token: str) -> tuple[InteractionState | None, tuple[int, Any] | None]:
        state = self._interaction_by_token(token)
        if app_id != self.app_id or state is None:
            return None, (404, {"message": "Unknown Webhook", "code": 10015})
        if now() - state.dispatched_at > self.interaction_token_ttl:
            return None, (401, {"message": "Invalid Webhook Token", "code": 50027})
        return state, None

    async def _get_original(self, *, app_id: str, token: str, **_: Any) -> tuple[int, Any]:
        state, err = self._check_token(app_id, token)
        if err is not None:
            return err
        assert state is not None
        if state.original_id is None or state.original_id not in self.messages:
            return 404, {"message": "Unknown Message", "code": 10008}
        return 200, self.messages[state.original_id]

    async def _delete_original(self, *, app_id: str, token: str, **_: Any) -> tuple[int, Any]:
        state, err = self._check_token(app_id, token)
        if err is not None:
            return err
        assert state is not None
        if state.original_id is None or state.original_id not in self.messages:
            return 404, {"message": "Unknown Message", "code": 10008}
        self.deleted.append(self.messages.pop(state.original_id))
        return 204, None

    async def _edit_original(self, *, app_id: str, token: str, body: Any, **_: Any) -> tuple[int, Any]:
        state, err = self._check_token(app_id, token)
        if err is not None:
            return err
        assert state is not None
        if state.original_id is None or state.original_id not in self.messages:
            return 404, {"message": "Unknown Message", "code": 10008}
        return self._apply_edit(self.messages[state.original_id], body)

    async def _followup(self, *, app_id: str, token: str, body: Any, **_: Any) -> tuple[int, Any]:
        state, err = self._check_token(app_id, token)
        if err is not None:
            return err
        assert state is not None
        if state.responded_at is None:
            return 404, {"message": "Unknown Webhook", "code": 10015}
        if (verr := self._validate_content(body)) is not None:
            return verr
        payload = state.payload
        message = p.message(
            channel_id=payload["channel_id"],
            guild_id=payload.get("guild_id"),
            author=self.bot,
            content=body.get("content") or "",
            author_member=p.member(None),
            webhook_id=self.app_id,
        )
        message["flags"] = int(body.get("flags") or 0) & (EPHEMERAL | SUPPRESS_EMBEDS)
        message["attachments"] = self._uploaded(message, body)
        self.messages[message["id"]] = message
        state.followups.append(message["id"])
        self._record_pings(message, body)
        self._record_unfurls(message)
        return 200, message

    def _webhook_message(self, state: InteractionState, message_id: str) -> dict[str, Any] | None:
        """A message this interaction's webhook may touch: its original response or a follow-up."""
        if message_id != state.original_id and message_id not in state.followups:
            return None
        return self.messages.get(message_id)

    async def _edit_followup(
        self, *, app_id: str, token: str, message_id: str, body: Any, **_: Any
    ) -> tuple[int, Any]:
        state, err = self._check_token(app_id, token)
        if err is not None:
            return err
        assert state is not None
        message = self._webhook_message(state, message_id)
        if message is None:
            return 404, {"message": "Unknown Message", "code": 10008}
        return self._apply_edit(message, body)

    async def _delete_followup(
        self, *, app_id: str, token: str, message_id: str, **_: Any
    ) -> tuple[int, Any]:
        state, err = self._check_token(app_id, token)
        if err is not None:
            return err
        assert state is not None
        if self._webhook_message(state, message_id) is None:
            return 404, {"message": "Unknown Message", "code": 10008}
        self.deleted.append(self.messages.pop(message_id))
        return 204, None

    # -- application commands

    async def _get_commands(self, *, app_id: str, guild_id: str | None = None, **_: Any) -> tuple[int, Any]:
        if app_id != self.app_id:
            return 403, {"message": "Missing Access", "code": 50001}
        return 200, self.commands.get(guild_id or "global", [])

    async def _get_command_permissions(self, *, app_id: str, guild_id: str, **_: Any) -> tuple[int, Any]:
        if app_id != self.app_id or guild_id not in self.guilds:
            return 403, {"message": "Missing Access", "code": 50001}
        entries = self.command_permissions.get(guild_id, {})
        return 200, [
            {"id": target, "application_id": self.app_id, "guild_id": guild_id, "permissions": overwrites}
            for target, overwrites in entries.items()
        ]

    async def _put_commands(
        self, *, app_id: str, body: Any, guild_id: str | None = None, **_: Any
    ) -> tuple[int, Any]:
        if app_id != self.app_id:
            return 403, {"message": "Missing Access", "code": 50001}
        if guild_id is not None and guild_id not in self.guilds:
            return 403, {"message": "Missing Access", "code": 50001}
        stored = []
        for definition in body:
            if (
                not re.fullmatch(r"[-_\w]{1,32}", definition.get("name", ""))
                or len(definition.get("description", "")) > 100
            ):
                return 400, {"message": "Invalid Form Body", "code": 50035}
            stored.append(
                {
                    "id": p.snowflake(),
                    "application_id": self.app_id,
                    "version": p.snowflake(),
                    "type": definition.get("type", 1),
                    "default_member_permissions": definition.get("default_member_permissions"),
                    "dm_permission": definition.get("dm_permission", True),
                    "nsfw": False,
                    **({"guild_id": guild_id} if guild_id else {}),
                    **definition,
                }
            )
        self.commands[guild_id or "global"] = stored
        return 200, stored


_REASONS = {
    400: "Invalid Form Body",
    401: "401: Unauthorized",
    403: "Missing Permissions",
    404: "Unknown Channel",
    500: "Internal Server Error",
}
_CODES = {403: 50013, 404: 10003}


def _json_response(status: int, body: Any, headers: dict[str, str]) -> web.Response:
    if status == 204 or body is None:
        return web.Response(status=204 if status < 300 else status, headers=headers)
    # Exactly "application/json" (no charset): discord.py parses JSON only for that exact value.
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )
