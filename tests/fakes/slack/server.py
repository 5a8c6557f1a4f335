"""A fake Slack on loopback: the Web API, Socket Mode's websocket and ``response_url`` endpoints.

The real ``AsyncWebClient(base_url=fake.api_url)`` and bolt's ``AsyncApp`` talk to it over HTTP. It keeps
messages like Slack does (``ts`` per post, ``message.thread_ts`` in the ``chat.postMessage`` response,
``msg_too_long`` past 4,000 chars on ``chat.update``, streaming state for ``chat.*Stream``), records every
call (method, merged query/form/JSON params, token, monotonic time) and can inject failures per method:
429 with ``Retry-After``, 5xx, or any Slack ``error`` code, for the next N calls, and delays.

Socket Mode: ``apps.connections.open`` (with the ``xapp-`` token) returns ``ws://127.0.0.1:PORT/link``; the
websocket sends ``hello``, then whatever envelopes a test sends, and records the client's acks.

    async with FakeSlack() as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        await client.chat_postMessage(channel="C1", text="hi")
        assert slack.calls_to("chat.postMessage")[0].params["text"] == "hi"
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

FAKE_BOT_TOKEN = "xoxb-fake-token"
FAKE_APP_TOKEN = "xapp-1-fake-token"
FAKE_CLIENT_SECRET = "fake-client-secret"
UPDATE_LIMIT = 4_000
POST_LIMIT = 40_000


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str
    at: float
    status: int = 200
    error: str = ""
    peer: str = ""  # the client's address:port: calls on one kept-alive connection share it


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    thread_ts: str = ""
    user: str = ""
    bot_id: str = ""
    blocks: list[Any] = field(default_factory=list)
    streaming: bool = False
    stream_text: str = ""  # markdown accumulated by chat.*Stream
    edits: int = 0
    params: dict[str, Any] = field(default_factory=dict)  # the posting call's params (unfurl flags, ...)

    @property
    def shown(self) -> str:
        """What a person would read: the streamed markdown for a streamed message, else the text."""
        return self.text if self.text or not self.stream_text else self.stream_text


@dataclass
class Workspace:
    team_id: str
    bot_token: str
    bot_user_id: str
    bot_id: str
    team_name: str = "Acme"


@dataclass
class SlackFile:
    id: str
    name: str
    data: bytes
    mimetype: str
    title: str = ""
    channel: str = ""  # bot uploads: where files.completeUploadExternal shared it
    thread_ts: str = ""
    comment: str = ""
    completed: bool = False


@dataclass
class Fault:
    status: int
    error: str
    retry_after: float | None
    times: int


@dataclass
class Envelope:
    envelope_id: str
    type: str
    payload: dict[str, Any]
    sent_at: float
    acked_at: float | None = None
    ack_payload: dict[str, Any] | None = None


class FakeSlack:
    """A loopback Slack for tests. Use as ``async with FakeSlack() as slack``."""

    def __init__(
        self,
        *,
        team_id: str = "T0001",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        app_id: str = "A0001",
        bot_token: str = FAKE_BOT_TOKEN,
        app_token: str = FAKE_APP_TOKEN,
        client_id: str = "111.222",
        client_secret: str = FAKE_CLIENT_SECRET,
    ) -> None:
        self.app_id = app_id
        self.app_token = app_token
        self.client_id = client_id
        self.client_secret = client_secret
        self.workspaces: dict[str, Workspace] = {}
        self.add_workspace(team_id, bot_token, bot_user_id, bot_id)
        self.team_id = team_id
        self.bot_token = bot_token
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.calls: list[Call] = []
        self.files: dict[str, SlackFile] = {}  # id -> a user's file (add_file) or one the bot uploaded
        self.file_downloads: list[tuple[str, str]] = []  # (file id, token used) for every download
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemerals: list[Call] = []
        self.responses: list[tuple[str, dict[str, Any]]] = []  # (response_url id, body)
        self.streaming_supported = True
        # users.info: profiles by user id (add_user); others get a made-up profile, or user_not_found
        # when unknown_users is True.
        self.users: dict[str, dict[str, Any]] = {}
        self.unknown_users = False
        self.closed_channels: set[str] = set()  # chat.postMessage there: not_in_channel (bot not invited)
        self.oauth_codes: dict[str, Workspace] = {}
        self.revoked: set[str] = set()
        self.envelopes: dict[str, Envelope] = {}
        self._faults: dict[str, list[Fault]] = {}
        self._delays: dict[str, float] = {}
        self._ts = itertools.count(1)
        self._ts_base = int(time.time())
        self._changed = asyncio.Condition()
        self._sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/link", self._socket)
        app.router.add_post("/response/{rid}", self._response_url)
        app.router.add_get("/files-pri/{file_id}/{name}", self._file_download)
        app.router.add_post("/upload/{file_id}", self._file_upload)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def aclose(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, rid: str = "") -> str:
        return f"{self.url}/response/{rid or uuid.uuid4().hex[:12]}"

    # ---------------------------------------------------------------- set-up helpers

    def add_workspace(
        self, team_id: str, bot_token: str, bot_user_id: str = "UBOT", bot_id: str = "BBOT"
    ) -> Workspace:
        ws = Workspace(team_id, bot_token, bot_user_id, bot_id)
        self.workspaces[bot_token] = ws
        return ws

    def add_oauth_code(self, code: str, team_id: str, bot_token: str, bot_user_id: str = "UBOT2") -> None:
        """``oauth.v2.access`` with ``code`` installs the app in ``team_id`` with ``bot_token``."""
        self.oauth_codes[code] = Workspace(team_id, bot_token, bot_user_id, "B" + bot_user_id[1:])

    def add_user(
        self,
        user_id: str,
        *,
        display_name: str = "",
        real_name: str = "",
        name: str = "",
        team_id: str = "",
    ) -> dict[str, Any]:
        """A member ``users.info`` knows. Slack sends empty strings for profile fields not filled in."""
        user: dict[str, Any] = {
            "id": user_id,
            "team_id": team_id or self.team_id,
            "name": name or user_id.lower(),
            "deleted": False,
            "real_name": real_name,
            "is_bot": False,
            "profile": {
                "display_name": display_name,
                "display_name_normalized": display_name,
                "real_name": real_name,
                "real_name_normalized": real_name,
                "image_48": "https://avatars.example/48.png",
            },
        }
        self.users[user_id] = user
        return user

    def fail(
        self,
        method: str,
        *,
        status: int = 429,
        error: str = "",
        retry_after: float | None = 1,
        times: int = 1,
    ) -> None:
        """The next ``times`` calls of ``method`` fail: HTTP ``status`` (429 gets ``Retry-After``)."""
        if not error:
            error = "ratelimited" if status == 429 else ("internal_error" if status >= 500 else "fatal_error")
        self._faults.setdefault(method, []).append(Fault(status, error, retry_after, times))

    def delay(self, method: str, seconds: float) -> None:
        self._delays[method] = seconds

    def add_file(self, name: str, data: bytes, mimetype: str, *, title: str = "") -> dict[str, Any]:
        """A file a user shared: the ``files`` entry of its message event (``url_private`` needs a token)."""
        fid = "F" + uuid.uuid4().hex[:10].upper()
        self.files[fid] = SlackFile(fid, name, data, mimetype, title)
        url = f"{self.url}/files-pri/{fid}/{name}"
        return {
            "id": fid,
            "name": name,
            "title": title or name,
            "mimetype": mimetype,
            "filetype": mimetype.split("/")[-1],
            "size": len(data),
            "url_private": url,
            "url_private_download": url + "?download=1",
        }

    def uploads(self) -> list[SlackFile]:
        """Files the bot uploaded and shared (files_upload_v2), oldest first."""
        return [f for f in self.files.values() if f.completed]

    async def _file_download(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        fid = request.match_info["file_id"]
        self.file_downloads.append((fid, token))
        f = self.files.get(fid)
        if f is None:
            return web.Response(status=404)
        if self._ws(token) is None:  # what Slack does without a token: a sign-in page, not an error
            return web.Response(text="<html>Sign in to Slack</html>", content_type="text/html")
        return web.Response(body=f.data, content_type=f.mimetype)

    async def _file_upload(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["file_id"])
        if f is None:
            return web.Response(status=404)
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            field_ = next(iter(form.values()), None)
            f.data = field_.file.read() if hasattr(field_, "file") else str(field_ or "").encode()
        else:
            f.data = await request.read()
        return web.Response(text=f"OK - {len(f.data)}")

    async def _m_files_getUploadURLExternal(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._ws(token) is None:
            return {"ok": False, "error": "invalid_auth"}
        fid = "F" + uuid.uuid4().hex[:10].upper()
        self.files[fid] = SlackFile(fid, str(params.get("filename", "")), b"", "")
        return {"ok": True, "upload_url": f"{self.url}/upload/{fid}", "file_id": fid}

    async def _m_files_completeUploadExternal(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._ws(token) is None:
            return {"ok": False, "error": "invalid_auth"}
        entries = params.get("files")
        entries = json.loads(entries) if isinstance(entries, str) else entries or []
        out = []
        for entry in entries:
            f = self.files.get(str(entry.get("id", "")))
            if f is None or not f.data:
                return {"ok": False, "error": "file_not_found"}
            f.title = str(entry.get("title") or f.name)
            f.channel = str(params.get("channel_id", "") or "")
            f.thread_ts = str(params.get("thread_ts", "") or "")
            f.comment = str(params.get("initial_comment", "") or "")
            f.mimetype = "image/png" if f.data.startswith(b"\x89PNG") else "application/octet-stream"
            f.completed = True
            out.append({"id": f.id, "title": f.title, "name": f.name})
        return {"ok": True, "files": out}

    def seed_message(self, channel: str, ts: str, text: str, user: str, thread_ts: str = "") -> Message:
        msg = Message(channel=channel, ts=ts, text=text, thread_ts=thread_ts, user=user)
        self.messages[(channel, ts)] = msg
        return msg

    # ---------------------------------------------------------------- assertions

    def calls_to(self, *methods: str) -> list[Call]:
        return [c for c in self.calls if c.method in methods and c.status == 200 and not c.error]

    def attempts(self, method: str) -> list[Call]:
        """Every call of ``method``, failed ones included."""
        return [c for c in self.calls if c.method == method]

    def bot_messages(self, channel: str | None = None, thread_ts: str | None = None) -> list[Message]:
        """Messages the bot posted (not seeded), in posting order."""
        out = [m for m in self.messages.values() if m.bot_id]
        if channel is not None:
            out = [m for m in out if m.channel == channel]
        if thread_ts is not None:
            out = [m for m in out if m.thread_ts == thread_ts]
        return sorted(out, key=lambda m: float(m.ts))

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked on every recorded change)."""
        async with asyncio.timeout(within):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def wait_calls(self, method: str, count: int = 1, within: float = 5.0) -> list[Call]:
        await self.wait_for(lambda: len(self.calls_to(method)) >= count, within)
        return self.calls_to(method)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ---------------------------------------------------------------- Web API

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    params.update(body)
            else:
                form = await request.post()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
        for key in ("blocks", "chunks", "prompts", "metadata", "attachments"):
            value = params.get(key)
            if isinstance(value, str) and value[:1] in "[{":
                params[key] = json.loads(value)
        return params

    @staticmethod
    def _token(request: web.Request, params: dict[str, Any]) -> str:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer ") :]
        return str(params.pop("token", ""))

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await self._params(request)
        token = self._token(request, params)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        call = Call(method=method, params=params, token=token, at=time.monotonic(), peer=str(peer or ""))
        self.calls.append(call)
        if method in self._delays:
            await asyncio.sleep(self._delays[method])
        faults = self._faults.get(method)
        if faults:
            fault = faults[0]
            fault.times -= 1
            if fault.times <= 0:
                faults.pop(0)
            call.status, call.error = fault.status, fault.error
            headers = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else {}
            await self._notify()
            if fault.status == 200:
                return web.json_response({"ok": False, "error": fault.error})
            return web.json_response(
                {"ok": False, "error": fault.error}, status=fault.status, headers=headers
            )
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            result: dict[str, Any] = {"ok": False, "error": "unknown_method"}
        else:
            result = await handler(token, params)
        if not result.get("ok"):
            call.error = str(result.get("error", "error"))
        await self._notify()
        return web.json_response(result)

    def _ws(self, token: str) -> Workspace | None:
        if token in self.revoked:
            return None
        return self.workspaces.get(token)

    def _next_ts(self) -> str:
        return f"{self._ts_base + next(self._ts)}.{next(self._ts):06d}"

    async def _m_auth_test(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        ws = self._ws(token)
        if ws is None:
            return {"ok": False, "error": "invalid_auth"}
        return {
            "ok": True,
            "url": f"https://{ws.team_name.lower()}.slack.com/",
            "team": ws.team_name,
            "user": "parley",
            "team_id": ws.team_id,
            "user_id": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "is_enterprise_install": False,
        }

    async def _m_auth_revoke(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        self.revoked.add(token)
        return {"ok": True, "revoked": True}

    async def _m_chat_postMessage(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        ws = self._ws(token)
        if ws is None:
            return {"ok": False, "error": "invalid_auth"}
        channel = str(params.get("channel", ""))
        text = str(params.get("text", "") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if channel in self.closed_channels:
            return {"ok": False, "error": "not_in_channel"}
        if not text and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        thread_ts = str(params.get("thread_ts", "") or "")
        msg = Message(
            channel=channel,
            ts=ts,
            text=text[:POST_LIMIT],
            thread_ts=thread_ts,
            user=ws.bot_user_id,
            bot_id=ws.bot_id,
            blocks=list(params.get("blocks") or []),
            params=params,
        )
        self.messages[(channel, ts)] = msg
        message: dict[str, Any] = {"type": "message", "text": msg.text, "user": msg.user, "ts": ts}
        message["bot_id"] = ws.bot_id
        if thread_ts:
            message["thread_ts"] = thread_ts
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    async def _m_chat_update(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._ws(token) is None:
            return {"ok": False, "error": "invalid_auth"}
        msg = self.messages.get((str(params.get("channel", "")), str(params.get("ts", ""))))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        if msg.streaming:
            return {"ok": False, "error": "message_is_streaming"}
        text = str(params.get("text", "") or "")
        if len(text) > UPDATE_LIMIT:
            return {"ok": False, "error": "msg_too_long"}
        msg.text = text
        if "blocks" in params:
            msg.blocks = list(params.get("blocks") or [])
        msg.edits += 1
        return {"ok": True, "channel": msg.channel, "ts": msg.ts, "text": text}

    async def _m_chat_postEphemeral(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._ws(token) is None:
            return {"ok": False, "error": "invalid_auth"}
        self.ephemerals.append(self.calls[-1])
        return {"ok": True, "message_ts": self._next_ts()}

    async def _m_chat_getPermalink(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(params.get("channel", "")), str(params.get("message_ts", ""))
        link = f"https://acme.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        msg = self.messages.get((channel, ts))
        if msg is not None and msg.thread_ts and msg.thread_ts != ts:
            link += f"?thread_ts={msg.thread_ts}&cid={channel}"
        return {"ok": True, "channel": channel, "permalink": link}

    async def _m_chat_startStream(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        ws = self._ws(token)
        if ws is None:
            return {"ok": False, "error": "invalid_auth"}
        if not self.streaming_supported:
            return {"ok": False, "error": "unknown_method"}
        channel, thread_ts = str(params.get("channel", "")), str(params.get("thread_ts", ""))
        if not channel or not thread_ts:
            return {"ok": False, "error": "invalid_arguments"}
        if not channel.startswith("D") and not (
            params.get("recipient_user_id") and params.get("recipient_team_id")
        ):
            return {"ok": False, "error": "missing_recipient"}
        ts = self._next_ts()
        msg = Message(
            channel=channel,
            ts=ts,
            text="",
            thread_ts=thread_ts,
            user=ws.bot_user_id,
            bot_id=ws.bot_id,
            streaming=True,
            params=params,
        )
        msg.stream_text = _stream_text(params)
        self.messages[(channel, ts)] = msg
        return {"ok": True, "channel": channel, "ts": ts}

    async def _m_chat_appendStream(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        msg = self.messages.get((str(params.get("channel", "")), str(params.get("ts", ""))))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        if not msg.streaming:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        msg.stream_text += _stream_text(params)
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    async def _m_chat_stopStream(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        msg = self.messages.get((str(params.get("channel", "")), str(params.get("ts", ""))))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        if not msg.streaming:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        msg.stream_text += _stream_text(params)
        msg.streaming = False
        msg.blocks = list(params.get("blocks") or [])
        return {"ok": True, "channel": msg.channel, "ts": msg.ts, "message": {"text": msg.stream_text}}

    async def _m_assistant_threads_setStatus(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    async def _m_assistant_threads_setSuggestedPrompts(
        self, token: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        return {"ok": True}

    async def _m_assistant_threads_setTitle(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    async def _m_conversations_replies(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(params.get("channel", "")), str(params.get("ts", ""))
        msgs = [
            m for m in self.messages.values() if m.channel == channel and (m.ts == ts or m.thread_ts == ts)
        ]
        msgs.sort(key=lambda m: float(m.ts))
        return {
            "ok": True,
            "messages": [
                {
                    "type": "message",
                    "ts": m.ts,
                    "thread_ts": m.thread_ts or None,
                    "text": m.shown,
                    "user": m.user,
                }
                for m in msgs
            ],
            "has_more": False,
        }

    async def _m_conversations_info(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel", ""))
        return {
            "ok": True,
            "channel": {"id": channel, "name": channel.lower(), "is_im": channel.startswith("D")},
        }

    async def _m_users_info(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._ws(token) is None:
            return {"ok": False, "error": "invalid_auth"}
        user_id = str(params.get("user", ""))
        if not user_id:
            return {"ok": False, "error": "user_not_found"}
        user = self.users.get(user_id)
        if user is None:
            if self.unknown_users:
                return {"ok": False, "error": "user_not_found"}
            user = {
                "id": user_id,
                "name": user_id.lower(),
                "real_name": "",
                "profile": {"display_name": f"User {user_id}", "real_name": ""},
            }
        return {"ok": True, "user": user}

    async def _m_oauth_v2_access(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("client_id") != self.client_id:
            return {"ok": False, "error": "invalid_client_id"}
        if params.get("client_secret") != self.client_secret:
            return {"ok": False, "error": "bad_client_secret"}
        ws = self.oauth_codes.pop(str(params.get("code", "")), None)
        if ws is None:
            return {"ok": False, "error": "invalid_code"}
        self.workspaces[ws.bot_token] = ws
        return {
            "ok": True,
            "app_id": self.app_id,
            "authed_user": {"id": "UINSTALLER"},
            "scope": "app_mentions:read,chat:write,commands",
            "token_type": "bot",
            "access_token": ws.bot_token,
            "bot_user_id": ws.bot_user_id,
            "team": {"id": ws.team_id, "name": ws.team_name},
            "enterprise": None,
            "is_enterprise_install": False,
        }

    async def _m_apps_connections_open(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        if token != self.app_token:
            return {"ok": False, "error": "invalid_auth"}
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link?ticket={uuid.uuid4().hex[:8]}"}

    # ---------------------------------------------------------------- response_url

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append((request.match_info["rid"], body))
        await self._notify()
        return web.Response(text="ok")

    # ---------------------------------------------------------------- Socket Mode

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id},
            }
        )
        await self._notify()
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                data = json.loads(frame.data)
                env = self.envelopes.get(str(data.get("envelope_id", "")))
                if env is not None and env.acked_at is None:
                    env.acked_at = time.monotonic()
                    env.ack_payload = data.get("payload")
                    await self._notify()
        finally:
            self._sockets.remove(ws)
            await self._notify()
        return ws

    @property
    def socket_connections(self) -> int:
        return len(self._sockets)

    async def send_envelope(
        self,
        payload: dict[str, Any],
        *,
        type: str = "events_api",
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> Envelope:
        """Send one envelope on the newest socket (as Slack picks one connection per envelope)."""
        if not self._sockets:
            raise RuntimeError("no Socket Mode connection")
        env = Envelope(uuid.uuid4().hex, type, payload, time.monotonic())
        self.envelopes[env.envelope_id] = env
        frame: dict[str, Any] = {
            "envelope_id": env.envelope_id,
            "payload": payload,
            "type": type,
            "accepts_response_payload": type != "events_api",
        }
        if type == "events_api":
            frame["retry_attempt"] = retry_attempt
            frame["retry_reason"] = retry_reason
        await self._sockets[-1].send_json(frame)
        return env

    async def wait_ack(self, env: Envelope, within: float = 3.0) -> Envelope:
        await self.wait_for(lambda: env.acked_at is not None, within)
        return env


def _stream_text(params: dict[str, Any]) -> str:
    text = str(params.get("markdown_text", "") or "")
    for chunk in params.get("chunks") or []:
        if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
            text += str(chunk.get("text", ""))
    return text
