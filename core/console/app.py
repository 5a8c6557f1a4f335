"""The operator console's web pages: an aiohttp sub-application mounted at ``/console``.

Server-rendered Jinja2 pages that read without JavaScript; the overview's charts are drawn by the vendored
Chart.js (``static/vendor``) from a JSON data block. Every response carries a strict CSP (no inline script),
refuses framing and is not cached. Everything but the login page and static files needs a session; every
POST needs the session's CSRF token and a role that may do it (:mod:`core.console.accounts`). Every action
is written to the console's audit stream under the account's name (:mod:`core.console.audit`); resume and
block also go to the safety event stream (stage ``admin``, source ``console``) as before.

Pages: overview, search, conversations, a conversation (transcript, handoff panel: status, assignee, notes,
reply), handoffs (the inbox), unanswered (and its CSV), moderation, knowledge, settings, audit (admins).
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from core.console.accounts import SHARED_ACCOUNT, Role, allows
from core.console.audit import AuditLog
from core.console.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, ConsoleAuth, Session, same_token
from core.console.inbox import STATES, Inbox, counts
from core.console.limits import DEVICE_COOKIE, DEVICE_DAYS, Network, client_address
from core.console.outbox import OutboxFor, no_outbox
from core.console.reads import ConsoleReads, Filters
from core.console.search import Found, SearchIndex
from core.console.stats import DailyStats, HandoffRow, Tally, total
from core.console.unanswered import KINDS, Embed, grouped, read_questions
from core.errors import ParleyError, StoreError
from core.handoff import Handoffs
from core.memory import NewMessage, RedisMemory
from core.prompt import AGENT_ROLE
from core.safety.events import Decision, EventLog
from core.safety.setup import blocked_key
from core.types import Author, Place, Turn

log = structlog.get_logger("parley.console")

HERE = Path(__file__).parent
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".md": "text/plain", ".svg": "image/svg+xml"}
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
DAY_CHOICES = (1, 7, 14, 30)  # 1: today, by the hour
MAX_RANGE_DAYS = 400
REPLY_CHARS = 3_000
# What each POST needs (anything else: a signed-in viewer may do it).
NEEDS: Mapping[str, Role] = {
    "/handoffs/resume": Role.AGENT,
    "/handoffs/reply": Role.AGENT,
    "/handoffs/assign": Role.AGENT,
    "/handoffs/status": Role.AGENT,
    "/handoffs/note": Role.AGENT,
    "/moderation/block": Role.AGENT,
    "/audit": Role.ADMIN,
}
# The signed-in session of the request being handled (set by the guard around the handler; aiohttp's typed
# request keys are too new for the aiohttp versions we support).
_session: ContextVar[Session | None] = ContextVar("parley_console_session", default=None)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# A platform's link to a conversation ('' when it cannot make one): each platform package's link_for.
LinkFor = Callable[[Place], str]


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


def _iso_day(day: str) -> str:
    """``20261207`` -> ``2026-12-07``."""
    return f"{day[:4]}-{day[4:6]}-{day[6:]}" if len(day) == 8 else day


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        return None


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
        outbox_for: OutboxFor = no_outbox,
        count_tokens: Callable[[str], int] = lambda text: max(1, len(text) // 4),
        redact: Callable[[str], str] = lambda text: text,
        trusted_proxies: tuple[Network, ...] = (),
        handoff_target_minutes: float = 15,
        embed: Embed | None = None,
        links: Mapping[str, LinkFor] | None = None,
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
        self.audit = AuditLog(redis, reads.keys)
        self.inbox = Inbox(redis, stats)
        self.search: SearchIndex | None = stats.search
        self.outbox_for = outbox_for
        self.count_tokens = count_tokens
        self.redact = redact
        self.trusted = trusted_proxies
        self.target_seconds = handoff_target_minutes * 60
        self.embed = embed
        self.links: Mapping[str, LinkFor] = links or {}
        self._env: jinja2.Environment | None = None
        self._static: dict[str, bytes] = {}
        self._log = log.bind(bot=bot)

    def thread_link(self, place: Place) -> str:
        """A link that opens the conversation in its platform ('' when there is none to make): the
        platform's own ``link_for`` (core knows no platform's URLs)."""
        link_for = self.links.get(place.platform)
        return link_for(place) if link_for is not None else ""

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
        env.filters["iso_day"] = _iso_day
        env.globals["thread_link"] = self.thread_link
        env.globals["late"] = handoff_late
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
        r.add_get("/search", self._search)
        r.add_get("/conversations", self._conversations)
        r.add_get("/conversation", self._conversation)
        r.add_get("/handoffs", self._handoffs)
        r.add_post("/handoffs/resume", self._resume)
        r.add_post("/handoffs/reply", self._reply)
        r.add_post("/handoffs/assign", self._assign)
        r.add_post("/handoffs/status", self._status)
        r.add_post("/handoffs/note", self._note)
        r.add_get("/unanswered", self._unanswered)
        r.add_get("/unanswered.csv", self._unanswered_csv)
        r.add_get("/moderation", self._moderation)
        r.add_post("/moderation/block", self._block)
        r.add_get("/knowledge", self._knowledge)
        r.add_get("/settings", self._settings)
        r.add_get("/audit", self._audit_page)
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
                self._log.warning("console_csrf_rejected", path=local, account=session.account)
                raise web.HTTPForbidden(text="CSRF token missing or wrong")
        needed = NEEDS.get(local)
        if needed is not None and not allows(session.role, needed):
            self._log.warning("console_role_refused", path=local, account=session.account, role=session.role)
            raise web.HTTPForbidden(text=f"your role ({session.role}) may not do this; ask an admin")
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

    @staticmethod
    def _who() -> Session:
        session = _session.get()
        assert session is not None  # the guard set it
        return session

    def _render(self, request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
        assert self._env is not None
        session = _session.get()
        html = self._env.get_template(template).render(
            base=self._prefix(request),
            bot=self.bot,
            csrf=session.csrf if session else values.pop("login_csrf", ""),
            signed_in=session is not None,
            account=session.account if session else "",
            role=session.role.value if session else "",
            can_act=bool(session and allows(session.role, Role.AGENT)),
            is_admin=bool(session and allows(session.role, Role.ADMIN)),
            nav=values.pop("nav", {}),
            **values,
        )
        return web.Response(text=html, content_type="text/html", status=status)

    async def _page(self, request: web.Request, template: str, **values: Any) -> web.Response:
        """A signed-in page: the navigation's inbox counts ride along (one read of the handoff index)."""
        rows = values.get("handoff_rows")
        if rows is None:
            rows = await self.stats.handoffs(200, self.stats.meta_key)
        return self._render(request, template, nav=counts(rows), **values)

    async def _record(self, action: str, target: str = "", detail: str = "") -> None:
        who = self._who()
        await self.audit.record(who.account, who.role.value, action, target, detail)

    # ------------------------------------------------------------------ sign-in

    async def _index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(self._url(request, "/overview"))

    async def _login_form(self, request: web.Request, error: str = "", status: int = 200) -> web.Response:
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
        response = self._render(
            request, "login.html", status=status, login_csrf=token, error=error, shared=self.auth.shared
        )
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
        name = str(form.get("account", "")).strip().lower()[:64]
        who = name or SHARED_ACCOUNT
        limiter = self.auth.limiter
        bucket = await limiter.bucket(who, request.cookies.get(DEVICE_COOKIE))
        wait = await limiter.wait(who, bucket)
        if wait > 0:
            self._log.warning("console_login_limited", account=who, bucket=bucket.split("-")[0])
            return await self._login_form(
                request, f"Too many failed sign-ins: try again in {math.ceil(wait)} s.", 429
            )
        if bucket == "anon":
            address = client_address(request.remote, request.headers.get("X-Forwarded-For", ""), self.trusted)
            if not await limiter.address_allowed(address):
                self._log.warning("console_login_limited", account=who, bucket="address")
                return await self._login_form(request, "Too many attempts: wait a few minutes.", 429)
        account = await self.auth.check(name, str(form.get("password", "")))
        if account is None:
            await limiter.failed(who, bucket)
            await self.audit.record(who, "", "sign_in_failed", detail=bucket.split("-")[0])
            self._log.warning("console_login_failed", account=who)
            return await self._login_form(request, "Wrong account or password.", 401)
        await limiter.succeeded(who, bucket)
        session = await self.auth.open_session(account)
        await self.audit.record(account.name, account.role.value, "sign_in")
        self._log.info("console_login", account=account.name, role=account.role.value)
        response = web.HTTPSeeOther(self._url(request, "/overview"))
        path, secure = self._prefix(request), self._secure(request)
        response.set_cookie(
            SESSION_COOKIE,
            session.token,
            path=path,
            httponly=True,
            samesite="Strict",
            secure=secure,
            max_age=self.auth.session_seconds,
        )
        if bucket == "anon":  # this browser now has a bucket of its own for this account
            device = await limiter.new_device(account.name)
            response.set_cookie(
                DEVICE_COOKIE,
                device,
                path=path,
                httponly=True,
                samesite="Strict",
                secure=secure,
                max_age=DEVICE_DAYS * 86_400,
            )
        response.del_cookie(LOGIN_CSRF_COOKIE, path=self._prefix(request))
        raise response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session = _session.get()
        if session is not None:
            await self.auth.close_session(session.token)
            await self._record("sign_out")
        response = web.HTTPSeeOther(self._url(request, "/login"))
        response.del_cookie(SESSION_COOKIE, path=self._prefix(request))
        raise response

    # ------------------------------------------------------------------ overview

    def _range(self, query: Mapping[str, str]) -> tuple[list[str], str, int]:
        """The days asked for (YYYYMMDD, oldest first), a label, and the day choice (0: a custom range)."""
        start, end = _day(query.get("from", "")), _day(query.get("to", ""))
        if start and end:
            start, end = min(start, end), max(start, end)
            start = max(start, end - timedelta(days=MAX_RANGE_DAYS - 1))
            count = (end - start).days + 1
            names = [(start + timedelta(days=i)).strftime("%Y%m%d") for i in range(count)]
            return names, f"{start.isoformat()} to {end.isoformat()} (UTC)", 0
        try:
            days = int(query.get("days", "14"))
        except ValueError:
            days = 14
        days = days if days in DAY_CHOICES else 14
        today = datetime.now(UTC).date()
        names = [(today - timedelta(days=back)).strftime("%Y%m%d") for back in range(days - 1, -1, -1)]
        label = "Today by the hour (UTC)" if days == 1 else f"Last {days} days (UTC)"
        return names, label, days

    async def _overview(self, request: web.Request) -> web.Response:
        names, label, days = self._range(request.query)
        series = await self.stats.days_named(names)
        per_day = [(day, total(rows)) for day, rows in series]
        by_place: dict[tuple[str, str], Tally] = {}
        for _, rows in series:
            for row in rows:
                by_place.setdefault((row.platform, row.workspace), Tally()).add(row.tally)
        everything = total(row for _, rows in series for row in rows)
        hourly = days == 1
        if hourly:
            labels = [f"{h:02d}:00" for h in range(24)]
            turns = {"answers": everything.hours, "refusals": [], "handoffs": [], "errors": []}
        else:
            labels = [_iso_day(d) for d, _ in per_day]
            turns = {
                k: [t.counts[k] for _, t in per_day] for k in ("answers", "refusals", "handoffs", "errors")
            }
        chart = {
            "hourly": hourly,
            "labels": labels,
            **turns,
            "days": [_iso_day(d) for d, _ in per_day],
            "tok_in": [t.counts["tok_in"] for _, t in per_day],
            "tok_out": [t.counts["tok_out"] for _, t in per_day],
            "cost": [round(t.cost, 6) for _, t in per_day],
            "up": [t.counts["up"] for _, t in per_day],
            "down": [t.counts["down"] for _, t in per_day],
            "p50": [t.percentile(0.5) for _, t in per_day],
            "p95": [t.percentile(0.95) for _, t in per_day],
        }
        split = await self.stats.split(names)
        workspaces = [Workspace(p, w, t) for (p, w), t in sorted(by_place.items())]
        return await self._page(
            request,
            "overview.html",
            days=days,
            label=label,
            day_choices=DAY_CHOICES,
            start=_iso_day(names[0]),
            end=_iso_day(names[-1]),
            chart=chart,
            total=everything,
            workspaces=workspaces,
            split=split,
            rows=[row for _, rows in series for row in rows],
        )

    # ------------------------------------------------------------------ conversations and search

    async def _search(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "").strip()[:200]
        found = Found(query, [], 0, [])
        if query and self.search is not None:
            found = await self.search.search(query, messages_key=self.reads.keys.messages)
        return await self._page(request, "search.html", q=query, found=found, indexed=self.search is not None)

    async def _conversations(self, request: web.Request) -> web.Response:
        q = request.query
        filters = Filters(
            q.get("platform", "").strip(),
            q.get("workspace", "").strip(),
            q.get("channel", "").strip(),
            q.get("user", "").strip(),
        )
        rows = await self.reads.conversations(filters)
        return await self._page(request, "conversations.html", rows=rows, filters=filters)

    async def _conversation(self, request: web.Request) -> web.Response:
        place = _place_from(request.query)
        if not place.platform or not place.channel:
            raise web.HTTPBadRequest(text="platform and channel are required")
        transcript = await self.reads.transcript(place)
        handoff = await self.inbox.row(place)
        notes = await self.inbox.notes(place) if handoff else []
        return await self._page(
            request,
            "conversation.html",
            t=transcript,
            place=place,
            handoff=handoff,
            notes=notes,
            states=STATES,
            agent_role=AGENT_ROLE,
            can_reply=self.outbox_for(place.platform) is not None,
            done=request.query.get("done", ""),
            now=time.time(),
            target=self.target_seconds,
        )

    # ------------------------------------------------------------------ the inbox

    async def _handoffs(self, request: web.Request) -> web.Response:
        rows = await self.stats.handoffs(200, self.stats.meta_key)
        wanted = request.query.get("status", "")
        shown = [r for r in rows if r.status == wanted] if wanted else [r for r in rows if r.open]
        return await self._page(
            request,
            "handoffs.html",
            handoff_rows=rows,
            open_rows=shown,
            resumed_rows=[r for r in rows if not r.open],
            wanted=wanted,
            now=time.time(),
            target=self.target_seconds,
            resumed=request.query.get("resumed", ""),
        )

    async def _form_place(self, request: web.Request) -> tuple[Place, Mapping[str, str]]:
        form = {k: str(v) for k, v in (await request.post()).items()}
        place = _place_from(form)
        if not place.platform or not place.channel:
            raise web.HTTPBadRequest(text="platform and channel are required")
        return place, form

    def _back(self, request: web.Request, place: Place, done: str) -> web.HTTPSeeOther:
        query = urlencode(
            {
                "platform": place.platform,
                "workspace": place.workspace,
                "channel": place.channel,
                "thread": place.thread,
                "done": done,
            }
        )
        return web.HTTPSeeOther(self._url(request, f"/conversation?{query}"))

    async def _resume(self, request: web.Request) -> web.StreamResponse:
        place, form = await self._form_place(request)
        who = self._who()
        # The same resume as Slack's button and /resume (core.handoff).
        handoffs = Handoffs(self.memory, self.stats, self.events)
        try:
            await handoffs.resume(place, by=who.account, via="console", actor=f"console:{who.account}")
        except (StoreError, RedisError) as exc:
            self._log.error("console_resume_failed", error=type(exc).__name__)
            raise web.HTTPServiceUnavailable(text="Redis did not answer; nothing was changed") from None
        await self._record("resume", place.conversation_id)
        if form.get("back") == "conversation":
            raise self._back(request, place, "resumed")
        raise web.HTTPSeeOther(self._url(request, "/handoffs?resumed=1"))

    async def _assign(self, request: web.Request) -> web.StreamResponse:
        place, form = await self._form_place(request)
        assignee = form.get("assignee", "").strip().lower()[:40]
        if assignee == "me":
            assignee = self._who().account
        await self.inbox.assign(place, assignee)
        await self._record("assign", place.conversation_id, assignee or "(nobody)")
        raise self._back(request, place, "assigned")

    async def _status(self, request: web.Request) -> web.StreamResponse:
        place, form = await self._form_place(request)
        state = form.get("status", "")
        try:
            await self.inbox.set_state(place, state)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        await self._record("status", place.conversation_id, state)
        raise self._back(request, place, "status")

    async def _note(self, request: web.Request) -> web.StreamResponse:
        place, form = await self._form_place(request)
        text = form.get("note", "").strip()
        if not text:
            raise web.HTTPBadRequest(text="the note is empty")
        await self.inbox.add_note(place, self._who().account, text)
        await self._record("note", place.conversation_id, f"{len(text)} chars")
        raise self._back(request, place, "noted")

    async def _reply(self, request: web.Request) -> web.StreamResponse:
        """An agent's words into the conversation, as the bot, signed; stored as the agent's message; the
        conversation stays (or becomes) paused until someone resumes it."""
        place, form = await self._form_place(request)
        text = form.get("text", "").strip()
        if not text or len(text) > REPLY_CHARS:
            raise web.HTTPBadRequest(text=f"write a reply of 1 to {REPLY_CHARS} characters")
        outbox = self.outbox_for(place.platform)
        if outbox is None:
            raise web.HTTPServiceUnavailable(
                text=f"this process has no {place.platform} connection: reply there, or use the console of "
                "`parley run`"
            )
        who = self._who()
        try:
            await outbox.post(place, f"{text}\n\n— {who.account} (support team)")
        except ParleyError as exc:
            self._log.warning("console_reply_failed", conversation=place.conversation_id, error=str(exc))
            raise web.HTTPBadGateway(text=f"the platform refused the reply: {exc}") from None
        stored = self.redact(text)
        message = NewMessage(
            role=AGENT_ROLE,
            text=stored,
            tokens=self.count_tokens(stored),
            author_id=f"console:{who.account}",
            author_name=who.account,
            turn_id=f"console-{secrets.token_hex(6)}",
        )
        try:
            await self.memory.record(
                place, [message], also=lambda pipe: self.stats.index(pipe, place, [stored, who.account])
            )
            meta: Any = await self._r.hget(self.stats.meta_key(place), "paused")
            if not meta:  # an agent answering takes the conversation over until Resume
                await self.memory.set_meta(
                    place, {"paused": "handoff", "paused_by": f"console:{who.account}"}
                )
            handoff = await self.inbox.row(place)
            if handoff is not None and not handoff.assignee:
                await self.inbox.assign(place, who.account)
        except (StoreError, RedisError) as exc:
            self._log.error("console_reply_not_stored", error=type(exc).__name__)
            raise web.HTTPServiceUnavailable(text="posted, but Redis did not store it") from None
        await self._record("reply", place.conversation_id, f"{len(text)} chars")
        raise self._back(request, place, "replied")

    # ------------------------------------------------------------------ what the bot could not answer

    async def _unanswered(self, request: web.Request) -> web.Response:
        questions = await read_questions(self._r, self.reads.keys)
        groups, how = await grouped(questions, self.embed)
        return await self._page(request, "unanswered.html", groups=groups, how=how, total=len(questions))

    async def _unanswered_csv(self, request: web.Request) -> web.Response:
        questions = await read_questions(self._r, self.reads.keys)
        groups, how = await grouped(questions, self.embed)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "group",
                "group_size",
                "kind",
                "time_utc",
                "question",
                "answer",
                "platform",
                "workspace",
                "channel",
                "thread",
            ]
        )
        for number, group in enumerate(groups, 1):
            for q in group.questions:
                writer.writerow(
                    [
                        number,
                        len(group.questions),
                        KINDS.get(q.kind, q.kind),
                        _when(q.ts),
                        _cell(q.text),
                        _cell(q.answer),
                        q.place.platform,
                        q.place.workspace,
                        q.place.channel,
                        q.place.thread,
                    ]
                )
        await self._record("export", "unanswered.csv", f"{len(questions)} rows, {how}")
        return web.Response(
            text=out.getvalue(),
            content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="unanswered.csv"'},
        )

    # ------------------------------------------------------------------ moderation and the rest

    async def _moderation(self, request: web.Request) -> web.Response:
        category = request.query.get("category", "")
        action = request.query.get("action", "")
        view = await self.reads.moderation(category, action)
        return await self._page(
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
        await self._safety_audit(Place(platform, workspace, "", ""), user, "block", what)
        await self._record(what, f"{platform}:{workspace}:{user}")
        raise web.HTTPSeeOther(self._url(request, f"/moderation?done={what}"))

    async def _knowledge(self, request: web.Request) -> web.Response:
        return await self._page(request, "knowledge.html", knowledge=self.knowledge)

    async def _settings(self, request: web.Request) -> web.Response:
        return await self._page(request, "settings.html", effective=self.effective)

    async def _audit_page(self, request: web.Request) -> web.Response:
        who = request.query.get("account", "").strip().lower()
        entries = await self.audit.recent(200, who)
        accounts = await self.auth.accounts.all()
        return await self._page(request, "audit.html", entries=entries, who=who, accounts=accounts)

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = self._static.get(name)
        if body is None:
            raise web.HTTPNotFound()
        kind = STATIC_TYPES.get(Path(name).suffix, "application/octet-stream")
        return web.Response(body=body, content_type=kind)

    # ------------------------------------------------------------------ audit

    async def _safety_audit(self, place: Place, user: str, category: str, action: str) -> None:
        """An operator's action in the safety event stream, like a moderation decision."""
        if self.events is None:
            return
        who = self._who()
        turn = Turn(
            author=Author(id=user or f"console:{who.account}"),
            place=place,
            text="",
            turn_id=f"console-{int(time.time())}",
        )
        decision = Decision("admin", category, action, "console", f"operator console: {who.account}")
        await self.events.record(turn, [decision])


def _cell(text: str) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def handoff_late(row: HandoffRow, now: float, target: float) -> bool:
    return row.open and row.waiting(now) > target
