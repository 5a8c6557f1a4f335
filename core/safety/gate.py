"""Admission: who may talk to the bot, and how much. One :class:`TurnAdmission` per turn, held by the engine.

    access lists (config, in process)  ->  riding on the turn's memory read: the blocked-users set, rate
    windows (user, channel), token quotas (user, workspace) and a generation slot (workspace)  ->  admit, or
    refuse saying when to try again (no LLM call is made)  ->  riding on the turn's final write: the turn's
    token usage counted into the quotas, the generation slot freed

A refused user is told once per window; further messages in the same window are ignored silently, so a
spammer cannot make the bot flood a channel with "slow down" replies. Commands that do not call the LLM have
a rate budget of their own (``command_rate``).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from core.errors import StoreError
from core.safety.events import EventLog
from core.safety.limits import LimitCheck, LimitOutcome, LimitStore, Window, user_tag
from core.safety.text import humanize_seconds
from core.safety.views import BlockedView, QuotaView
from core.types import DIRECT_WORKSPACE, CommandCall, ReplyKind, ReplyResult, Turn

if TYPE_CHECKING:
    from core.context import TurnContext

log = structlog.get_logger("parley.safety")

WAIT_MS = 15_000  # a turn waiting in line that has not asked again for this long leaves the line

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
    command_rate: tuple[Window, ...] = ()  # commands that do not call the LLM
    user_tokens: int = 0  # per quota window; 0: no quota
    workspace_tokens: int = 0
    user_stored_bytes: int = 0  # bytes a user may add to memory per quota window; 0: no budget
    conversation_stored_bytes: int = 0  # ... and one conversation
    quota_window_seconds: int = 86_400
    max_concurrent: int = 0  # generations per workspace; 0: no limit
    lease_seconds: float = 180.0
    llm_commands: frozenset[str] = frozenset({"story"})
    exempt_platforms: frozenset[str] = frozenset()
    exempt_admins: bool = False
    texts: dict[str, str] = field(default_factory=dict)  # reason -> text with {retry} (or {wait})
    busy_after_seconds: float = 60.0  # tell a waiting user when the expected wait is longer
    max_queue_seconds: float = 600.0  # past this, a turn waiting for a generation slot ends "busy"


class Admission:
    """A bot's admission policy. :meth:`begin` makes the per-turn :class:`TurnAdmission` the engine holds."""

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
        # How long a generation holds its slot, on average (this process's view): for wait estimates.
        self.generation_seconds = 3.0
        # Redis Cluster: the blocked sets and stored-bytes totals known without a round trip per turn.
        self.blocked_view = BlockedView()
        self.quota_view = QuotaView()

    def estimate(self, place: int) -> float:
        """Expected seconds until a turn at ``place`` in line gets a generation slot: with every slot busy,
        one frees every ``generation_seconds / slots`` seconds on average."""
        return place * self.generation_seconds / max(1, self.limits.max_concurrent)

    def generated(self, seconds: float) -> None:
        self.generation_seconds += (seconds - self.generation_seconds) * 0.2  # moving average

    @contextlib.asynccontextmanager
    async def admitting(
        self, turn: Turn, call: CommandCall | None, *, judged: bool
    ) -> AsyncIterator[TurnAdmission]:
        """Admission's lifetime as the turn's block (as discord.py's ``MaxConcurrency``: acquire on the way
        in, release in ``finally``): whatever ends the turn (its end, an error, cancellation), the slot, the
        line and the read's checks are settled with the result the turn reached (``TurnAdmission.result``)."""
        admission = self.begin(turn, call, judged=judged)
        try:
            yield admission
        finally:
            await admission.finish(admission.result)

    def begin(self, turn: Turn, call: CommandCall | None, *, judged: bool) -> TurnAdmission:
        """Start admitting ``turn``. ``judged``: the engine will ask :meth:`TurnAdmission.judge` (an
        addressed message or a command); only then do the checks ride on the memory read."""
        exempt = self._exempt(turn)
        checks = [] if exempt else self._checks(turn, call)
        quotas = [] if exempt else self._quotas(turn)
        stored = [] if exempt else self.stored(turn)
        prefetch = judged and not self.store.cluster and not self.access.denial(turn)
        blocked = self._blocked_key(turn.place.platform, turn.place.workspace)
        return TurnAdmission(self, turn, checks, quotas, blocked, prefetch, stored)

    async def may_store(self, turn: Turn) -> bool:
        """Whether an unanswered message may be kept as context: its author passes the access lists, is
        not blocked here, and has stored-bytes budget left (theirs and the conversation's)."""
        if self.access.denial(turn):
            return False
        budgets = [] if self._exempt(turn) else self.stored(turn)
        try:
            outcomes, blocked = await self.store.run(
                budgets,
                ("sismember", (self._blocked_key(turn.place.platform, turn.place.workspace), turn.author.id)),
            )
        except StoreError:
            return True  # the memory write will fail too if Redis is down; nothing to protect against
        return not blocked[0] and all(o.admitted for o in outcomes)

    def stored(self, turn: Turn) -> list[LimitCheck]:
        """The stored-bytes budgets of a turn's author and conversation (checked with the turn, counted by
        its memory write): every message that reaches memory counts, whatever path wrote it."""
        lim, out = self.limits, []
        if lim.user_stored_bytes:
            out.append(
                self.store.quota("stored-user", _who(turn), lim.user_stored_bytes, lim.quota_window_seconds)
            )
        if lim.conversation_stored_bytes:
            conv = user_tag("conversation", turn.place.conversation_id)  # one-way: no ids in key names
            out.append(
                self.store.quota(
                    "stored-conversation", conv, lim.conversation_stored_bytes, lim.quota_window_seconds
                )
            )
        return out

    def _exempt(self, turn: Turn) -> bool:
        return turn.place.platform in self.limits.exempt_platforms or (
            self.limits.exempt_admins and turn.author.is_admin
        )

    def _checks(self, turn: Turn, call: CommandCall | None) -> list[LimitCheck]:
        lim, store, p = self.limits, self.store, turn.place
        member = turn.turn_id
        if call is not None and call.name not in lim.llm_commands:
            # Commands that do not call the LLM have a budget of their own: /help does not eat into the
            # chat budget, and a flood of /forget (which scans the keyspace) is still cut short.
            rates = [store.rate("command", _who(turn), w, member) for w in lim.command_rate]
            return rates + self.stored(turn)
        checks = [store.rate("user", _who(turn), w, member) for w in lim.user_rate]
        channel = f"{p.platform}:{p.workspace}:{p.channel}"
        checks += [store.rate("channel", channel, w, member) for w in lim.channel_rate]
        checks += self._quotas(turn)
        checks += self.stored(turn)
        if lim.max_concurrent:
            lease = int(lim.lease_seconds * 1000)
            tag = user_tag(p.platform, turn.author.id)
            who = f"{p.platform}:{tag}"
            slot = store.acquire(
                p.platform, _where(turn), lim.max_concurrent, lease, turn.turn_id, who, WAIT_MS
            )
            checks.append(slot)
        return checks

    def _quotas(self, turn: Turn) -> list[LimitCheck]:
        lim = self.limits
        quotas = []
        if lim.user_tokens:
            quotas.append(self.store.quota("user", _who(turn), lim.user_tokens, lim.quota_window_seconds))
        if lim.workspace_tokens:
            where = f"{turn.place.platform}:{_where(turn)}"
            quotas.append(
                self.store.quota("workspace", where, lim.workspace_tokens, lim.quota_window_seconds)
            )
        return quotas


def _who(turn: Turn) -> str:
    return f"{turn.place.platform}:{user_tag(turn.place.platform, turn.author.id)}"


def _where(turn: Turn) -> str:
    """The workspace a turn's shared budgets (generation slots, workspace quota) belong to. Direct messages
    outside any workspace (Discord's ``@me``) are each user's own: one DM user cannot starve the others."""
    p = turn.place
    if p.workspace == DIRECT_WORKSPACE:
        return f"{DIRECT_WORKSPACE}:{user_tag(p.platform, turn.author.id)}"
    return p.workspace


class TurnAdmission:
    """Admission of one turn, held by the engine from start to finish.

    ``queue_read`` puts the checks on the turn's memory read; ``judge`` decides (access, blocked, limits);
    ``queue_write`` puts quota accounting and the slot's release on the final memory write; ``finish``
    settles whatever the write did not carry, and gives back what an unjudged turn took.
    """

    def __init__(
        self,
        admission: Admission,
        turn: Turn,
        checks: list[LimitCheck],
        quotas: list[LimitCheck],
        blocked_key: str,
        prefetch: bool,
        stored: list[LimitCheck] | None = None,
    ) -> None:
        self._a = admission
        self._stored = stored or []  # stored-bytes budgets: counted by the memory write
        self.turn = turn
        self._checks = checks
        self._quotas = quotas
        self._blocked_key = blocked_key
        self._prefetch = prefetch
        self._outcomes: list[LimitOutcome] | None = None  # what the checks took (prefetched or run)
        self._blocked = False
        self._judged = False
        self._slot: tuple[str, str] | None = None  # (slots key, turn id) while a generation slot is held
        self._line: LimitOutcome | None = None  # the slot check's outcome while the turn waits in line
        self._slot_since = 0.0  # when the slot was granted (for the admission's wait estimates)
        self._settled = False  # usage counted and slot freed (by the final write or by finish)
        self.result: ReplyResult | None = None  # what the turn ended with (settled with it)

    @property
    def place(self) -> int:
        """The turn's place in line for a generation slot (1 = next); 0 when it needs none or has one."""
        return self._line.place if self._line is not None else 0

    async def poll_slot(self) -> int:
        """Ask again for a generation slot; returns the new place in line (0: granted)."""
        line = self._line
        if line is None:
            return 0
        try:
            outcome = await self._a.store.poll(line.check)
        except StoreError as exc:  # Redis went away while waiting: go on (the memory write will tell)
            log.warning("slot_poll_failed", error=str(exc), turn_id=self.turn.turn_id)
            self._line = None
            return 0
        if outcome.admitted:
            self._line = None
            self._hold(outcome)
            return 0
        self._line = outcome
        return outcome.place

    def _hold(self, outcome: LimitOutcome) -> None:
        self._slot = (outcome.check.key, self.turn.turn_id)
        self._slot_since = time.monotonic()

    def queue_read(self, pipe: Any) -> None:
        """Queue the access and limit checks on the turn's memory read (a rider of RedisMemory.load)."""
        if self._prefetch:
            LimitStore.queue_checks(
                pipe, self._checks, ("sismember", (self._blocked_key, self.turn.author.id))
            )

    def take_read(self, results: list[Any] | None) -> None:
        """The read's results for :meth:`queue_read`'s commands (None: some failed, e.g. NOSCRIPT; the
        checks then run again in :meth:`judge`)."""
        if self._prefetch and results is not None:
            self._outcomes, (blocked,) = LimitStore.parse(self._checks, 1, results)
            self._blocked = bool(blocked)

    async def judge(self, ctx: TurnContext) -> ReplyResult | None:
        """None admits the turn; a result refuses or ignores it."""
        a, turn = self._a, self.turn
        self._judged = True
        denial = a.access.denial(turn)
        if denial:
            log.info("access_denied", reason=denial, turn_id=turn.turn_id, platform=turn.place.platform)
            await a.events.count(f"admission:ignore:{denial}")
            return ctx.result("", ReplyKind.IGNORED, meta={"reason": "access_denied", "access": denial})
        if self._outcomes is None:  # not prefetched (Redis Cluster, or the read's checks failed)
            try:
                if a.store.cluster:
                    self._outcomes, self._blocked = await self._run_on_cluster()
                else:
                    self._outcomes, (blocked,) = await a.store.run(
                        self._checks, ("sismember", (self._blocked_key, turn.author.id))
                    )
                    self._blocked = bool(blocked)
            except StoreError as exc:
                # Limits cannot be checked: answer anyway (the memory read failed too if Redis is down).
                log.error("limits_unavailable", error=str(exc), turn_id=turn.turn_id)
                self._outcomes = []
                return None
        outcomes = self._outcomes
        for o in outcomes:
            if o.check.kind == "acquire":
                if o.admitted:
                    self._hold(o)
                else:
                    self._line = o  # no free slot: the turn waits in line (unless another limit refuses it)
        if self._blocked:
            await self._refund()
            log.info("user_blocked", turn_id=turn.turn_id, platform=turn.place.platform)
            await a.events.count("admission:ignore:blocked")
            return ctx.result("", ReplyKind.IGNORED, meta={"reason": "blocked"})
        denied = [o for o in outcomes if not o.admitted and o.check.kind != "acquire"]
        if not denied:
            return None
        return await self._refuse(ctx, denied)

    async def _run_on_cluster(self) -> tuple[list[LimitOutcome], bool]:
        """The checks on a cluster: stored-bytes budgets and the blocked set from what this process knows
        (core/safety/views.py), the rest (rate limits, token quotas, slots) in one round trip per node, and
        none when nothing is left to ask."""
        a, user = self._a, self.turn.author.id
        views, blocked_view = a.quota_view, a.blocked_view
        local = [views.outcome(c) for c in self._checks if views.judged_here(c)]
        remote = [c for c in self._checks if not views.judged_here(c)]
        blocked = blocked_view.blocked(self._blocked_key, user)
        version = blocked_view.version
        extra: list[tuple[str, tuple[Any, ...]]] = []
        if blocked is None:  # the whole set when a fresh version can keep it, else the one member
            extra.append(
                ("smembers", (self._blocked_key,)) if version else ("sismember", (self._blocked_key, user))
            )
        if not remote and not extra:
            return local, bool(blocked)
        outcomes, plain = await a.store.run(remote, *extra)
        if blocked is None:
            if version:
                members = frozenset(str(m) for m in plain[0])
                blocked_view.store(self._blocked_key, version, members)
                blocked = user in members
            else:
                blocked = bool(plain[0])
        return outcomes + local, bool(blocked)

    def queue_write(self, pipe: Any, tokens: int, stored_bytes: int = 0) -> None:
        """Queue the turn's quota accounting and the slot's release on its final memory write, and the
        bytes the write stores into the stored-bytes budgets (whether or not the turn was judged: an
        unanswered message kept as context counts too)."""
        if self._judged:
            LimitStore.queue_usage(pipe, self._quotas, tokens, self._slot)
        if stored_bytes > 0:
            LimitStore.queue_usage(pipe, self._stored, stored_bytes)

    def busy(self, ctx: TurnContext) -> ReplyResult:
        """The end of a turn that waited past ``max_queue_seconds`` for a generation slot."""
        wait = self._a.estimate(self.place)
        template = self._a.limits.texts.get("busy") or ctx.persona.busy
        text = template.replace("{retry}", humanize_seconds(wait))
        meta = {"reason": "busy", "limit": "workspace", "retry_after": str(max(1, round(wait)))}
        return ctx.result(text, ReplyKind.REFUSAL, meta=meta, ephemeral=True)

    def waiting_notice(self) -> str:
        return self._a.limits.texts.get("waiting", "").replace(
            "{wait}", humanize_seconds(self._a.estimate(self.place))
        )

    def written(self, ok: bool) -> None:
        """The final write ran :meth:`queue_write`'s commands (``ok``), or not: :meth:`finish` does it."""
        if ok and self._judged:
            self._settled = True

    async def finish(self, result: ReplyResult | None) -> None:
        """Settle at the turn's end (``result`` None: the turn was cancelled or failed before its end)."""
        if self._slot is not None:
            self._a.generated(time.monotonic() - self._slot_since)
        if self._settled:
            return
        self._settled = True
        try:
            if self._line is not None:  # gave up waiting (or was cancelled): leave the line
                await self._a.store.refund([self._line])
            if not self._judged:
                # A duplicate delivery, a paused thread, an early end: give back what the read's checks took.
                if self._outcomes:
                    await self._a.store.refund(self._outcomes)
                return
            tokens = result.usage.total if result is not None else 0
            quotas = self._quotas if tokens > 0 else []
            if quotas or self._slot is not None:
                await self._a.store.add_usage(quotas, tokens, self._slot)
        except StoreError as exc:  # the slot's lease frees it; the quota misses one turn's tokens
            log.warning("admission_settle_failed", error=str(exc), turn_id=self.turn.turn_id)

    async def _refund(self, notice: tuple[str, int] | None = None) -> bool:
        self._slot = self._line = None
        self._settled = True
        try:
            return await self._a.store.refund(self._outcomes or [], notice)
        except StoreError as exc:
            log.warning("limits_refund_failed", error=str(exc), turn_id=self.turn.turn_id)
            return True

    async def _refuse(self, ctx: TurnContext, denied: Sequence[LimitOutcome]) -> ReplyResult:
        turn = ctx.turn
        worst = max(denied, key=lambda o: o.retry_ms)
        reason = "rate_limited" if worst.check.kind == "rate" else "quota_exceeded"
        retry_ms = worst.retry_ms
        # Tell the user once per window, then stay quiet: a flood of refusals is a flood too.
        notice = self._a.store.notice_key(worst.check.scope, _who(turn), reason)
        tell = await self._refund((notice, max(retry_ms, 1000)))
        log.info(
            "limit_refused",
            reason=reason,
            scope=worst.check.scope,
            retry_ms=retry_ms,
            told=tell,
            turn_id=turn.turn_id,
            platform=turn.place.platform,
        )
        await self._a.events.count(f"admission:{reason}:{worst.check.scope}")
        meta = {
            "reason": reason,
            "limit": worst.check.scope,
            "retry_after": str(max(1, (retry_ms + 999) // 1000)),
        }
        if not tell:
            return ctx.result("", ReplyKind.IGNORED, meta={**meta, "silent": "1"})
        texts = self._a.limits.texts
        template = texts.get(f"{reason}:{worst.check.scope}") or texts.get(reason, "")
        text = template.replace("{retry}", humanize_seconds(retry_ms / 1000))
        return ctx.result(text, ReplyKind.REFUSAL, meta=meta, ephemeral=True)
