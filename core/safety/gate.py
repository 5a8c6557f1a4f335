"""Admission: who may talk to the bot, and how much. An engine :data:`~core.engine.Gate` plus a turn observer.

    access lists (config, in process)  ->  one Redis round trip: the blocked-users set, rate windows (user,
    channel), token quotas (user, workspace) and a generation slot (workspace)  ->  admit, or refuse saying
    when to try again (no LLM call is made)

A refused user is told once per window; further messages in the same window are ignored silently, so a
spammer cannot make the bot flood a channel with "slow down" replies. After the turn, the observer counts
the reported token usage into the quotas and frees the generation slot, in one round trip.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from core.engine import TurnContext
from core.errors import StoreError
from core.safety.events import EventLog
from core.safety.limits import Check, LimitStore, Outcome, Window, user_tag
from core.safety.text import humanize_seconds
from core.types import CommandCall, ReplyKind, ReplyResult, Turn

log = structlog.get_logger("parley.safety")

_MENTION_ID = re.compile(r"^<@!?([\w-]+)(?:\|[^>]*)?>$")


def parse_user(arg: str) -> str:
    """``<@U123|ann>``, ``<@!123>`` or a bare id -> the id."""
    arg = arg.strip()
    m = _MENTION_ID.match(arg)
    return m.group(1) if m else arg.lstrip("@")


@dataclass(frozen=True)
class AccessPolicy:
    """Allow- and deny-lists; an entry is ``id`` or ``platform:id``. Empty allow-lists allow everyone."""

    allow_workspaces: frozenset[str] = frozenset()
    deny_workspaces: frozenset[str] = frozenset()
    allow_channels: frozenset[str] = frozenset()
    deny_channels: frozenset[str] = frozenset()
    allow_users: frozenset[str] = frozenset()
    deny_users: frozenset[str] = frozenset()
    ignore_bots: bool = True

    @staticmethod
    def _in(entries: frozenset[str], platform: str, ident: str) -> bool:
        return ident in entries or f"{platform}:{ident}" in entries

    def denial(self, turn: Turn) -> str:
        """Why the turn is not admitted ("" when it is)."""
        p, a = turn.place, turn.author
        if self.ignore_bots and a.is_bot:
            return "bot_author"
        checks = (
            ("workspace", self.allow_workspaces, self.deny_workspaces, p.workspace),
            ("channel", self.allow_channels, self.deny_channels, p.channel),
            ("user", self.allow_users, self.deny_users, a.id),
        )
        for scope, allow, deny, ident in checks:
            if self._in(deny, p.platform, ident):
                return f"{scope}_denied"
            if allow and not self._in(allow, p.platform, ident):
                return f"{scope}_not_allowed"
        return ""


@dataclass(frozen=True)
class LimitPolicy:
    user_rate: tuple[Window, ...] = ()
    channel_rate: tuple[Window, ...] = ()
    user_tokens: int = 0  # per quota window; 0: no quota
    workspace_tokens: int = 0
    quota_window_seconds: int = 86_400
    max_concurrent: int = 0  # generations per workspace; 0: no limit
    lease_seconds: float = 180.0
    llm_commands: frozenset[str] = frozenset({"story"})
    exempt_platforms: frozenset[str] = frozenset()
    exempt_admins: bool = False
    texts: dict[str, str] = field(default_factory=dict)  # reason -> text with {retry}


@dataclass
class _Held:
    key: str
    since: float


class Admission:
    """The gate and the observer, sharing the generation slots this process holds."""

    def __init__(
        self,
        *,
        store: LimitStore,
        events: EventLog,
        access: AccessPolicy,
        limits: LimitPolicy,
        blocked_key: Callable[[str, str], str],
    ) -> None:
        self.store = store
        self.events = events
        self.access = access
        self.limits = limits
        self._blocked_key = blocked_key  # (platform, workspace) -> key of the blocked-users set
        self._held: dict[str, _Held] = {}  # turn id -> slot key, until the turn's observer frees it
        self._written: set[str] = set()  # turns whose usage rode on the final memory write
        self._prefetched: dict[str, _PreRead] = {}  # turn id -> checks that rode on the memory read

    def _forget_stale(self) -> None:
        """Slots of turns whose observer never ran (cancelled) expire by their lease in Redis; drop them."""
        cutoff = time.monotonic() - self.limits.lease_seconds
        for turn_id in [t for t, h in self._held.items() if h.since < cutoff]:
            del self._held[turn_id]

    # ------------------------------------------------------------------------------------------ the gate

    def _exempt(self, turn: Turn) -> bool:
        return turn.place.platform in self.limits.exempt_platforms or (
            self.limits.exempt_admins and turn.author.is_admin
        )

    def _checks(self, turn: Turn, call: CommandCall | None) -> list[Check]:
        lim, store = self.limits, self.store
        p = turn.place
        if call is not None and call.name not in lim.llm_commands:
            return []  # commands that do not call the LLM cost nothing worth limiting
        uid = user_tag(p.platform, turn.author.id)
        member = turn.turn_id
        checks = [store.rate("user", f"{p.platform}:{uid}", w, member) for w in lim.user_rate]
        channel = f"{p.platform}:{p.workspace}:{p.channel}"
        checks += [store.rate("channel", channel, w, member) for w in lim.channel_rate]
        checks += self._quotas(turn)
        if lim.max_concurrent:
            lease = int(lim.lease_seconds * 1000)
            checks.append(store.acquire(p.platform, p.workspace, lim.max_concurrent, lease, turn.turn_id))
        return checks

    def _quotas(self, turn: Turn) -> list[Check]:
        lim, p = self.limits, turn.place
        quotas = []
        if lim.user_tokens:
            who = f"{p.platform}:{user_tag(p.platform, turn.author.id)}"
            quotas.append(self.store.quota("user", who, lim.user_tokens, lim.quota_window_seconds))
        if lim.workspace_tokens:
            where = f"{p.platform}:{p.workspace}"
            quotas.append(
                self.store.quota("workspace", where, lim.workspace_tokens, lim.quota_window_seconds)
            )
        return quotas

    async def gate(self, ctx: TurnContext) -> ReplyResult | None:
        turn = ctx.turn
        denial = self.access.denial(turn)
        if denial:
            log.info("access_denied", reason=denial, turn_id=turn.turn_id, platform=turn.place.platform)
            await self.events.count(f"admission:ignore:{denial}")
            return ctx.result("", ReplyKind.IGNORED, meta={"reason": "access_denied", "access": denial})
        if self._held:
            self._forget_stale()
        pre = self._prefetched.pop(turn.turn_id, None)
        if pre is not None and pre.outcomes is not None:
            pre.consumed = True  # the checks ran with the memory read: no round trip of our own
            outcomes, blocked = pre.outcomes, pre.blocked
        else:
            call = turn.command or ctx.engine.commands.parse(turn.text)
            checks = [] if self._exempt(turn) else self._checks(turn, call)
            blocked_key = self._blocked_key(turn.place.platform, turn.place.workspace)
            try:
                outcomes, (blocked,) = await self.store.run(
                    checks, ("sismember", (blocked_key, turn.author.id))
                )
            except StoreError as exc:
                # Limits cannot be checked: answer anyway (the memory read failed too if Redis is down).
                log.error("limits_unavailable", error=str(exc), turn_id=turn.turn_id)
                return None
        for o in outcomes:
            if o.check.kind == "acquire" and o.admitted:
                self._held[turn.turn_id] = _Held(o.check.key, time.monotonic())
        if blocked:
            await self._refund(turn, outcomes)
            log.info("user_blocked", turn_id=turn.turn_id, platform=turn.place.platform)
            await self.events.count("admission:ignore:blocked")
            return ctx.result("", ReplyKind.IGNORED, meta={"reason": "blocked"})
        denied = [o for o in outcomes if not o.admitted]
        if not denied:
            return None
        return await self._refuse(ctx, outcomes, denied)

    def read_hook(self, turn: Turn, call: CommandCall | None) -> _PreRead | None:
        """Queue the access and limit checks on the turn's memory read (engine ``read_hooks``)."""
        if self.store.cluster or self.access.denial(turn):
            return None  # cluster pipelines carry no scripts; a denied turn needs no Redis at all
        if len(self._prefetched) > 10_000:  # turns that ended without gate or engine cleanup (cancelled)
            self._prefetched.clear()
        checks = [] if self._exempt(turn) else self._checks(turn, call)
        pre = _PreRead(self, turn, checks, self._blocked_key(turn.place.platform, turn.place.workspace))
        self._prefetched[turn.turn_id] = pre
        return pre

    async def give_back(self, turn: Turn, outcomes: Sequence[Outcome]) -> None:
        await self._refund(turn, outcomes)

    async def _refund(
        self, turn: Turn, outcomes: Sequence[Outcome], notice: tuple[str, int] | None = None
    ) -> bool:
        self._held.pop(turn.turn_id, None)
        try:
            return await self.store.refund(outcomes, notice)
        except StoreError as exc:
            log.warning("limits_refund_failed", error=str(exc), turn_id=turn.turn_id)
            return True

    async def _refuse(
        self, ctx: TurnContext, outcomes: Sequence[Outcome], denied: Sequence[Outcome]
    ) -> ReplyResult:
        turn = ctx.turn
        worst = max(denied, key=lambda o: o.retry_ms)
        kind = worst.check.kind
        reason = {"rate": "rate_limited", "quota": "quota_exceeded", "acquire": "busy"}[kind]
        retry_ms = worst.retry_ms if kind != "acquire" else 5_000
        # Tell the user once per window, then stay quiet: a flood of refusals is a flood too.
        p = turn.place
        who = f"{p.platform}:{user_tag(p.platform, turn.author.id)}"
        notice = self.store.notice_key(worst.check.scope, who, reason)
        tell = await self._refund(turn, outcomes, (notice, max(retry_ms, 1000)))
        log.info(
            "limit_refused",
            reason=reason,
            scope=worst.check.scope,
            retry_ms=retry_ms,
            told=tell,
            turn_id=turn.turn_id,
            platform=turn.place.platform,
        )
        await self.events.count(f"admission:{reason}:{worst.check.scope}")
        meta = {
            "reason": reason,
            "limit": worst.check.scope,
            "retry_after": str(max(1, (retry_ms + 999) // 1000)),
        }
        if not tell:
            return ctx.result("", ReplyKind.IGNORED, meta={**meta, "silent": "1"})
        template = self.limits.texts.get(f"{reason}:{worst.check.scope}") or self.limits.texts.get(reason, "")
        if reason == "busy" and not template:
            template = ctx.persona.busy
        text = template.replace("{retry}", humanize_seconds(retry_ms / 1000))
        return ctx.result(text, ReplyKind.REFUSAL, meta=meta, ephemeral=True)

    # -------------------------------------------------------------------------------------- the observer

    def write_hook(self, ctx: TurnContext) -> _UsageWrite | None:
        """Count the turn's tokens and free its slot inside the turn's final memory write (one round trip
        instead of two); :meth:`observe` does it alone for turns that write nothing."""
        turn, tokens = ctx.turn, ctx.usage.total
        held = self._held.get(turn.turn_id)
        quotas = self._quotas(turn) if tokens > 0 and not self._exempt(turn) else []
        if not quotas and held is None:
            return None
        return _UsageWrite(self, turn.turn_id, quotas, tokens, (held.key, turn.turn_id) if held else None)

    async def may_store(self, turn: Turn) -> bool:
        """Whether an unanswered message may be kept as context: its author passes the access lists and is
        not blocked here."""
        if self.access.denial(turn):
            return False
        try:
            blocked = await self.store.run(
                [],
                ("sismember", (self._blocked_key(turn.place.platform, turn.place.workspace), turn.author.id)),
            )
        except StoreError:
            return True  # the memory write will fail too if Redis is down; nothing to protect against
        return not blocked[1][0]

    def usage_written(self, turn_id: str) -> None:
        self._held.pop(turn_id, None)
        if len(self._written) > 10_000:  # observers of cancelled turns never ran: forget them
            self._written.clear()
        self._written.add(turn_id)

    async def observe(self, turn: Turn, result: ReplyResult, seconds: float) -> None:
        if turn.turn_id in self._written:
            self._written.discard(turn.turn_id)
            return
        held = self._held.pop(turn.turn_id, None)
        tokens = result.usage.total
        if held is None and (tokens <= 0 or self._exempt(turn)):
            return
        quotas = self._quotas(turn) if tokens > 0 and not self._exempt(turn) else []
        release = (held.key, turn.turn_id) if held is not None else None
        if quotas or release is not None:
            await self.store.add_usage(quotas, tokens, release)

    async def aclose(self) -> None:
        """Free the slots still held (turns cancelled at shutdown); their leases would free them later."""
        held, self._held = self._held, {}
        try:
            await self.store.release([(h.key, turn_id) for turn_id, h in held.items()])
        except StoreError as exc:
            log.warning("slot_release_failed", error=str(exc))


@dataclass
class _UsageWrite:
    """Quota accounting and slot release queued on the turn's final write (core.memory.WriteExtra)."""

    admission: Admission
    turn_id: str
    quotas: list[Check]
    tokens: int
    release: tuple[str, str] | None

    def build(self, pipe: Any) -> None:
        LimitStore.queue_usage(pipe, self.quotas, self.tokens, self.release)

    async def load_scripts(self) -> None:
        await self.admission.store.load()

    def written(self) -> None:
        self.admission.usage_written(self.turn_id)


@dataclass
class _PreRead:
    """Admission checks queued on the turn's memory read (core.engine.PreRead)."""

    admission: Admission
    turn: Turn
    checks: list[Check]
    blocked_key: str
    outcomes: list[Outcome] | None = None
    blocked: bool = False
    consumed: bool = False

    def build(self, pipe: Any) -> None:
        LimitStore.queue_checks(pipe, self.checks, ("sismember", (self.blocked_key, self.turn.author.id)))

    def take(self, results: list[Any] | None) -> None:
        if results is not None:  # None: a check failed (e.g. NOSCRIPT); the gate then runs them itself
            self.outcomes, (blocked,) = LimitStore.parse(self.checks, 1, results)
            self.blocked = bool(blocked)

    async def unused(self) -> None:
        """The gate never judged the turn (a duplicate delivery, a paused thread): give back what the
        checks took, so that such turns cost no rate budget and hold no generation slot."""
        self.admission._prefetched.pop(self.turn.turn_id, None)
        if not self.consumed and self.outcomes:
            self.consumed = True
            await self.admission.give_back(self.turn, self.outcomes)
