"""Build a bot's safety pieces from its config, check them at start-up, and close them again.

:func:`open_safety` is called by :func:`core.runtime.open_runtime`; everything it finds wrong is a
:class:`ConfigError` naming the field (a bad block-list regex, an unknown profile or category, a detector that
does not import, a fail-closed profile whose moderation endpoint does not exist).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog

from core.bot import BotSpec
from core.commands import Command
from core.errors import ConfigError
from core.keys import KeySpace
from core.moderation import Action, Moderator, compile_patterns
from core.safety.chain import ModerationChain
from core.safety.commands import safety_command
from core.safety.endpoint import ModerationEndpoint, ModerationUnavailable
from core.safety.events import Decision, EventLog
from core.safety.forget import Forgetter, Forgotten
from core.safety.gate import AccessPolicy, Admission, LimitPolicy
from core.safety.limits import LimitStore, Window
from core.safety.mask import mask_url
from core.safety.profiles import Profile, resolve_profile
from core.safety.redact import PIIRedactor, build_redactor
from core.safety.rules import LocalRules
from core.safety.settings import SafetySettings
from core.settings import Settings
from core.types import ReplyKind, ReplyResult, Turn

log = structlog.get_logger("parley.safety")


@dataclass
class Safety:
    profile: Profile
    moderator: Moderator  # a ModerationChain
    redactor: PIIRedactor
    admission: Admission
    events: EventLog
    forgetter: Forgetter
    endpoint: ModerationEndpoint | None
    redis: aioredis.Redis
    keys: KeySpace
    canary: str  # in every system prompt; never logged

    @property
    def redact_before_llm(self) -> bool:
        return self.profile.action("input", "pii") is Action.REDACT

    def blocked_key(self, platform: str, workspace: str) -> str:
        return blocked_key(self.keys, platform, workspace)

    def commands(self) -> list[Command]:
        return [safety_command(self)]

    async def check(self) -> list[str]:
        """Problems for ``parley check``: one line each (the moderation endpoint, probed now)."""
        p = self.profile
        if not p.endpoint:
            return []
        if self.endpoint is None:
            return [f"moderation: profile {p.name} runs on local rules only (no usable moderation endpoint)"]
        try:
            await self.endpoint.scores(f"parley check {secrets.token_hex(4)}")
        except ModerationUnavailable as exc:
            effect = "every message is refused" if p.on_error == "closed" else "messages pass unchecked"
            where = mask_url(self.endpoint.base_url)
            return [f"moderation endpoint at {where}: {exc} ({effect} until it answers)"]
        return []

    async def forget(self, platform: str, user_id: str) -> Forgotten:
        return await self.forgetter.forget(platform, user_id)

    async def record_engine_decisions(self, turn: Turn, result: ReplyResult) -> None:
        """Record what the engine decided on its own: too-long input and system-prompt leaks."""
        if result.kind is not ReplyKind.REFUSAL:
            return
        if result.meta.get("category") == "prompt_leak":
            await self.events.record(turn, [Decision("output", "prompt_leak", "refuse", "engine", "leak")])
        elif result.meta.get("reason") == "too_long":
            await self.events.record(
                turn, [Decision("input", "too_long", "refuse", "engine", f"{len(turn.text)}")]
            )


def blocked_key(keys: KeySpace, platform: str, workspace: str) -> str:
    """The set of users admins blocked in one workspace (``/safety block``)."""
    return keys.scoped("safety", "blocked", platform, workspace)


def _windows(items: Any) -> tuple[Window, ...]:
    return tuple(Window(int(w.count), float(w.seconds)) for w in items)


def _limit_policy(spec: BotSpec) -> LimitPolicy:
    lim = spec.config.limits
    return LimitPolicy(
        user_rate=_windows(lim.user_rate),
        channel_rate=_windows(lim.channel_rate),
        command_rate=_windows(lim.command_rate),
        user_tokens=lim.user_daily_tokens,
        workspace_tokens=lim.workspace_daily_tokens,
        user_stored_bytes=lim.user_daily_stored_bytes,
        conversation_stored_bytes=lim.conversation_daily_stored_bytes,
        quota_window_seconds=lim.quota_window_seconds,
        max_concurrent=lim.max_concurrent_per_workspace,
        lease_seconds=lim.generation_lease_seconds,
        llm_commands=frozenset(lim.llm_commands),
        exempt_platforms=frozenset(lim.exempt_platforms),
        exempt_admins=lim.exempt_admins,
        texts={
            "rate_limited": lim.rate_limited_text,
            "rate_limited:channel": lim.channel_rate_limited_text,
            "quota_exceeded": lim.quota_text,
            "quota_exceeded:workspace": lim.workspace_quota_text,
            "quota_exceeded:stored-user": lim.stored_text,
            "quota_exceeded:stored-conversation": lim.conversation_stored_text,
            "busy": lim.busy_text,
            "waiting": lim.waiting_text,
        },
        busy_after_seconds=lim.busy_after_seconds,
        max_queue_seconds=lim.max_queue_seconds,
    )


def _access_policy(spec: BotSpec) -> AccessPolicy:
    a = spec.config.access
    return AccessPolicy(
        allow_workspaces=frozenset(a.allow_workspaces),
        deny_workspaces=frozenset(a.deny_workspaces),
        allow_channels=frozenset(a.allow_channels),
        deny_channels=frozenset(a.deny_channels),
        allow_users=frozenset(a.allow_users),
        deny_users=frozenset(a.deny_users),
        ignore_bots=a.ignore_bots,
    )


async def _endpoint(
    profile: Profile, settings: Settings, safety: SafetySettings, source: str
) -> ModerationEndpoint | None:
    """The moderation endpoint, probed once: a wrong URL or key fails a fail-closed profile at start-up and
    switches a fail-open one to local rules (one warning line); a passing outage only warns."""
    if not profile.endpoint:
        return None
    if not safety.parley_moderation_endpoint:
        log.warning(
            "moderation_endpoint_off", profile=profile.name, reason="PARLEY_MODERATION_ENDPOINT=false"
        )
        return None
    key = safety.parley_moderation_api_key or settings.openai_api_key
    base_url = safety.parley_moderation_base_url or settings.openai_base_url
    if key is None and not base_url:
        problem = "no moderation endpoint configured (set OPENAI_API_KEY or PARLEY_MODERATION_BASE_URL)"
        if profile.on_error == "closed":
            raise ConfigError(f"{source}: moderation.profile {profile.name!r} fails closed: {problem}")
        log.warning("moderation_endpoint_missing", profile=profile.name, using="local rules only")
        return None
    endpoint = ModerationEndpoint(
        api_key=key.get_secret_value() if key is not None else "not-needed",
        base_url=base_url,
        model=safety.parley_moderation_model,
        timeout=profile.timeout,
    )
    try:
        await endpoint.scores("start-up check")
    except ModerationUnavailable as exc:
        if exc.permanent:
            await endpoint.aclose()
            problem = (
                f"the moderation endpoint at {endpoint.base_url} answered {exc} (set "
                "PARLEY_MODERATION_BASE_URL to a server with /v1/moderations, or "
                "PARLEY_MODERATION_ENDPOINT=false for local rules only)"
            )
            if profile.on_error == "closed":
                raise ConfigError(
                    f"{source}: moderation.profile {profile.name!r} fails closed: {problem}"
                ) from None
            log.warning(
                "moderation_endpoint_unusable", profile=profile.name, error=exc.code, using="local rules only"
            )
            return None
        log.warning("moderation_endpoint_unavailable_at_start", profile=profile.name, error=exc.code)
    return endpoint


@asynccontextmanager
async def open_safety(
    spec: BotSpec,
    settings: Settings,
    client: aioredis.Redis,
    keys: KeySpace,
    safety_settings: SafetySettings,
) -> AsyncIterator[Safety]:
    source = str(spec.folder / "bot.toml")
    cfg = spec.config
    profile = resolve_profile(cfg.moderation, source=source)
    blocked = compile_patterns(
        cfg.moderation.blocked_patterns, source=f"{source}: moderation.blocked_patterns"
    )
    redactor = build_redactor(cfg.privacy.redact, cfg.privacy.extra_detectors, source=source)
    canary = secrets.token_hex(8) if cfg.moderation.canary else ""
    rules = LocalRules(
        blocked=blocked,
        redactor=redactor,
        link_domains=profile.link_domains,
        system_prompts=[p.system_prompt for p in spec.personas.values()],
        canary=canary,
        blocked_category=profile.blocked_category,
    )
    events = EventLog(client, keys, maxlen=cfg.moderation.events_max)
    store = LimitStore(client, keys)
    await store.load()
    async with AsyncExitStack() as stack:
        endpoint = await _endpoint(profile, settings, safety_settings, source)
        if endpoint is not None:
            stack.push_async_callback(endpoint.aclose)
        chain = ModerationChain(profile=profile, rules=rules, events=events, endpoint=endpoint)
        safety = Safety(
            profile=profile,
            moderator=chain,
            redactor=redactor,
            admission=Admission(
                store=store,
                events=events,
                access=_access_policy(spec),
                limits=_limit_policy(spec),
                blocked_key=lambda platform, workspace: blocked_key(keys, platform, workspace),
            ),
            events=events,
            forgetter=Forgetter(client, keys, events),
            endpoint=endpoint,
            redis=client,
            keys=keys,
            canary=canary,
        )
        log.info(
            "safety_ready",
            bot=spec.name,
            profile=profile.name,
            endpoint="on" if endpoint is not None else "off",
            on_error=profile.on_error,
            canary="on" if canary else "off",
        )
        yield safety
