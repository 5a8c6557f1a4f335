"""The operator console's web pages: an aiohttp sub-application mounted at ``/console``.

Server-rendered Jinja2 pages that read without JavaScript; the overview's charts are drawn by the vendored
Chart.js (``static/vendor``) from a JSON data block. Every response carries a strict CSP (no inline script),
refuses framing and is not cached. Everything but the login page and static files needs a session; every
POST needs the session's CSRF token. Actions (resume a handoff, block or unblock a user) are written to the
safety event stream (stage ``admin``, source ``console``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from core.console.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, ConsoleAuth, Session, same_token
from core.console.reads import ConsoleReads, Filters
from core.console.stats import DailyStats, Tally, total
from core.errors import StoreError
from core.memory import RedisMemory
from core.safety.events import Decision, EventLog
from core.safety.setup import blocked_key
from core.types import Author, Place, Turn

log = structlog.get_logger("parley.console")

HERE = Path(__file__).parent
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".md": "text/plain"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
DAY_CHOICES = (7, 14, 30)
# The signed-in session of the request being handled (set by the guard around the handler; aiohttp's typed
# request keys are too new for the aiohttp versions we support).
_session: ContextVar[Session | None] = ContextVar("parley_console_session", default=None)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Workspace:
    platform: str
    workspace: str
    tally: Tally


def _place_from(data: Mapping[str, str]) -> Place:
    return Place(
        data.get("platform", ""), data.get("workspace", ""), data.get("channel", ""), data.get("thread", "")
    )


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _thread_link(place: Place) -> str:
    """A link that opens the conversation in its platform ('' when there is none to make)."""
    if place.platform == "slack" and place.channel:
        ts = place.thread.replace(".", "")
        return f"https://slack.com/archives/{place.channel}" + (f"/p{ts}" if ts else "")
    if place.platform == "discord" and place.workspace and place.channel:
        # A Discord thread is a channel of its own.
        return f"https://discord.com/channels/{place.workspace}/{place.thread or place.channel}"
    return ""


class Console:
    def __init__(
        self,
        *,
        bot: str,
        auth: ConsoleAuth,
        stats: DailyStats,
        reads: ConsoleReads,
        memory: RedisMemory,
        redis: aioredis.Redis,
        events: EventLog | None,
        effective: Mapping[str, Mapping[str, str]],
        knowledge: str = "",
        prefix: str = "/console",
    ) -> None:
        self.bot = bot
        self.prefix = prefix
        self._r = redis
        self.auth = auth
        self.stats = stats
        self.reads = reads
        self.memory = memory
        self.events = events
        self.effective = effective
        self.knowledge = knowledge
        self._env: jinja2.Environment | None = None
        self._static: dict[str, bytes] = {}
        self._log = log.bind(bot=bot)

    # ------------------------------------------------------------------ set-up

    def _load(self) -> None:
        """Compile the templates and read the static files (blocking: run it in a thread)."""
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
        )
        env.filters["when"] = _when
        env.filters["duration"] = _duration
        env.globals["thread_link"] = _thread_link
        for name in env.list_templates():
            env.get_template(name)
        self._env = env
        static = HERE / "static"
        self._static = {
            p.relative_to(static).as_posix(): p.read_bytes() for p in static.rglob("*") if p.is_file()
        }

    async def app(self) -> web.Application:
        if self._env is None:
            await asyncio.to_thread(self._load)
        app = web.Application(middlewares=[self._guard])
        r = app.router
        r.add_get("", self._index)
        r.add_get("/", self._index)
        r.add_get("/login", self._login_form)
        r.add_post("/login", self._login)
        r.add_post("/logout", self._logout)
        r.add_get("/overview", self._overview)
        r.add_get("/conversations", self._conversations)
        r.add_get("/conversation", self._conversation)
        r.add_get("/handoffs", self._handoffs)
        r.add_post("/handoffs/resume", self._resume)
        r.add_get("/moderation", self._moderation)
        r.add_post("/moderation/block", self._block)
        r.add_get("/knowledge", self._knowledge)
        r.add_get("/settings", self._settings)
        r.add_get("/static/{name:.+}", self._static_file)
        return app

    # ------------------------------------------------------------------ guard

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await self._guarded(request, handler)
        except web.HTTPException as exc:
            exc.headers.update(SECURITY_HEADERS)
            raise
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        local = request.path.removeprefix(self.prefix)
        if local == "/login" or local.startswith("/static/"):
            return await handler(request)
        session = await self.auth.session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            if request.method == "GET":
                raise web.HTTPSeeOther(self._url(request, "/login"))
            raise web.HTTPForbidden(text="sign in first")
        if request.method == "POST":
            form = await request.post()
            if not same_token(str(form.get("csrf", "")), session.csrf):
                self._log.warning("console_csrf_rejected", path=local)
                raise web.HTTPForbidden(text="CSRF token missing or wrong")
        token = _session.set(session)
        try:
            return await handler(request)
        finally:
            _session.reset(token)

    def _prefix(self, request: web.Request) -> str:
        return self.prefix

    def _url(self, request: web.Request, local: str) -> str:
        return self._prefix(request) + local

    @staticmethod
    def _secure(request: web.Request) -> bool:
        return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"

    def _render(self, request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
        assert self._env is not None
        session = _session.get()
        html = self._env.get_template(template).render(
            base=self._prefix(request),
            bot=self.bot,
            csrf=session.csrf if session else values.pop("login_csrf", ""),
            signed_in=session is not None,
            **values,
        )
        return web.Response(text=html, content_type="text/html", status=status)

    # ------------------------------------------------------------------ sign-in

    async def _index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(self._url(request, "/overview"))

    async def _login_form(self, request: web.Request, error: str = "", status: int = 200) -> web.Response:
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
        response = self._render(request, "login.html", status=status, login_csrf=token, error=error)
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            path=self._prefix(request),
            httponly=True,
            samesite="Strict",
            secure=self._secure(request),
            max_age=3600,
        )
        return response

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if not same_token(str(form.get("csrf", "")), request.cookies.get(LOGIN_CSRF_COOKIE)):
            raise web.HTTPForbidden(text="CSRF token missing or wrong")
        address = request.remote or "unknown"
        if not await self.auth.allow_attempt(address):
            self._log.warning("console_login_limited")
            return await self._login_form(request, "Too many attempts: wait a few minutes.", 429)
        if not await asyncio.to_thread(self.auth.password_ok, str(form.get("password", ""))):
            self._log.warning("console_login_failed")
            return await self._login_form(request, "Wrong password.", 401)
        session = await self.auth.open_session()
        self._log.info("console_login")
        response = web.HTTPSeeOther(self._url(request, "/overview"))
        response.set_cookie(
            SESSION_COOKIE,
            session.token,
            path=self._prefix(request),
            httponly=True,
            samesite="Strict",
            secure=self._secure(request),
            max_age=self.auth.session_seconds,
        )
        response.del_cookie(LOGIN_CSRF_COOKIE, path=self._prefix(request))
        raise response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session = _session.get()
        if session is not None:
            await self.auth.close_session(session.token)
        response = web.HTTPSeeOther(self._url(request, "/login"))
        response.del_cookie(SESSION_COOKIE, path=self._prefix(request))
        raise response

    # ------------------------------------------------------------------ pages

    async def _overview(self, request: web.Request) -> web.Response:
        try:
            days = int(request.query.get("days", "14"))
        except ValueError:
            days = 14
        days = days if days in DAY_CHOICES else 14
        series = await self.stats.days(days)
        per_day = [(day, total(rows)) for day, rows in series]
        by_place: dict[tuple[str, str], Tally] = {}
        for _, rows in series:
            for row in rows:
                by_place.setdefault((row.platform, row.workspace), Tally()).add(row.tally)
        everything = total(row for _, rows in series for row in rows)
        labels = [f"{d[4:6]}-{d[6:]}" for d, _ in per_day]
        chart = {
            "labels": labels,
            "answers": [t.counts["answers"] for _, t in per_day],
            "refusals": [t.counts["refusals"] for _, t in per_day],
            "handoffs": [t.counts["handoffs"] for _, t in per_day],
            "errors": [t.counts["errors"] for _, t in per_day],
            "tok_in": [t.counts["tok_in"] for _, t in per_day],
            "tok_out": [t.counts["tok_out"] for _, t in per_day],
            "cost": [round(t.cost, 6) for _, t in per_day],
            "up": [t.counts["up"] for _, t in per_day],
            "down": [t.counts["down"] for _, t in per_day],
            "p50": [t.percentile(0.5) for _, t in per_day],
            "p95": [t.percentile(0.95) for _, t in per_day],
        }
        workspaces = [Workspace(p, w, t) for (p, w), t in sorted(by_place.items())]
        return self._render(
            request,
            "overview.html",
            days=days,
            day_choices=DAY_CHOICES,
            chart=chart,
            per_day=per_day,
            total=everything,
            workspaces=workspaces,
            rows=[row for _, rows in series for row in rows],
        )

    async def _conversations(self, request: web.Request) -> web.Response:
        q = request.query
        filters = Filters(
            q.get("platform", "").strip(),
            q.get("workspace", "").strip(),
            q.get("channel", "").strip(),
            q.get("user", "").strip(),
        )
        rows = await self.reads.conversations(filters)
        return self._render(request, "conversations.html", rows=rows, filters=filters)

    async def _conversation(self, request: web.Request) -> web.Response:
        place = _place_from(request.query)
        if not place.platform or not place.channel:
            raise web.HTTPBadRequest(text="platform and channel are required")
        transcript = await self.reads.transcript(place)
        return self._render(request, "conversation.html", t=transcript, place=place)

    async def _handoffs(self, request: web.Request) -> web.Response:
        rows = await self.stats.handoffs(200, self.reads.keys.meta)
        now = time.time()
        return self._render(
            request,
            "handoffs.html",
            open_rows=[r for r in rows if r.open],
            resumed_rows=[r for r in rows if not r.open],
            now=now,
            resumed=request.query.get("resumed", ""),
        )

    async def _resume(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        place = _place_from({k: str(v) for k, v in form.items()})
        if not place.platform or not place.channel:
            raise web.HTTPBadRequest(text="platform and channel are required")
        try:
            await self.memory.delete_meta(place, "paused", "paused_by")
            await self.stats.mark_resumed(place, "console")
        except (StoreError, RedisError) as exc:
            self._log.error("console_resume_failed", error=type(exc).__name__)
            raise web.HTTPServiceUnavailable(text="Redis did not answer; nothing was changed") from None
        await self._audit(place, "", "handoff", "resume")
        self._log.info("handoff_resumed", by="console", conversation=place.conversation_id)
        raise web.HTTPSeeOther(self._url(request, "/handoffs?resumed=1"))

    async def _moderation(self, request: web.Request) -> web.Response:
        category = request.query.get("category", "")
        action = request.query.get("action", "")
        view = await self.reads.moderation(category, action)
        return self._render(
            request,
            "moderation.html",
            view=view,
            category=category,
            action=action,
            done=request.query.get("done", ""),
        )

    async def _block(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        platform = str(form.get("platform", "")).strip()
        workspace = str(form.get("workspace", "")).strip()
        user = str(form.get("user", "")).strip()
        what = str(form.get("action", ""))
        if not (platform and workspace and user) or what not in ("block", "unblock"):
            raise web.HTTPBadRequest(
                text="platform, workspace, user and action (block or unblock) are required"
            )
        key = blocked_key(self.reads.keys, platform, workspace)
        try:
            if what == "block":
                await self._r.sadd(key, user)
            else:
                await self._r.srem(key, user)
        except RedisError as exc:
            self._log.error("console_block_failed", error=type(exc).__name__)
            raise web.HTTPServiceUnavailable(text="Redis did not answer; nothing was changed") from None
        await self._audit(Place(platform, workspace, "", ""), user, "block", what)
        raise web.HTTPSeeOther(self._url(request, f"/moderation?done={what}"))

    async def _knowledge(self, request: web.Request) -> web.Response:
        return self._render(request, "knowledge.html", knowledge=self.knowledge)

    async def _settings(self, request: web.Request) -> web.Response:
        return self._render(request, "settings.html", effective=self.effective)

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = self._static.get(name)
        if body is None:
            raise web.HTTPNotFound()
        kind = STATIC_TYPES.get(Path(name).suffix, "application/octet-stream")
        return web.Response(body=body, content_type=kind)

    # ------------------------------------------------------------------ audit

    async def _audit(self, place: Place, user: str, category: str, action: str) -> None:
        """An operator's action in the safety event stream, like a moderation decision."""
        if self.events is None:
            return
        turn = Turn(
            author=Author(id=user or "console"), place=place, text="", turn_id=f"console-{int(time.time())}"
        )
        await self.events.record(turn, [Decision("admin", category, action, "console", "operator console")])
