"""``/safety``: the admins' view of and controls over moderation and limits, per workspace or guild.

    /safety                 the profile, limits and this workspace's counters
    /safety events [n]      the newest moderation events and tool calls here (who, what, which action or
                            outcome; no message text; a tool call shows its duration and redacted arguments)
    /safety block <user>    ignore a user in this workspace from now on (also: unblock, blocked)

Admin-only (the engine checks ``Author.is_admin``, which the adapters set from platform permissions).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.commands import Command
from core.context import TurnContext
from core.safety.gate import parse_user
from core.types import CommandCall

if TYPE_CHECKING:
    from core.safety.setup import Safety

USAGE = "[status | events [n] | block <user> | unblock <user> | blocked]"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def safety_command(safety: Safety) -> Command:
    async def handler(ctx: TurnContext, call: CommandCall) -> AsyncIterator[str]:
        words = (call.args or call.options.get("action", "")).split()
        sub = words[0].lower() if words else "status"
        place = ctx.turn.place
        key = safety.blocked_key(place.platform, place.workspace)
        r = safety.redis
        if sub == "status":
            yield await _status(safety, ctx)
        elif sub == "events":
            n = int(words[1]) if len(words) > 1 and words[1].isdigit() else 10
            events = await safety.events.recent(
                platform=place.platform, workspace=place.workspace, count=min(n, 25)
            )
            if not events:
                yield "No moderation events recorded here."
                return
            lines = [f"Newest {len(events)} moderation and tool events here:"]
            lines += [
                f"• {_when(e['ms'])} {e.get('stage', '')} {e.get('category', '')} → {e.get('action', '')} "
                f"(user {e.get('user', '?')}, channel {e.get('channel', '?')}, turn {e.get('turn', '?')})"
                # A tool call's detail is its duration and redacted arguments (core/tools/audit.py).
                + (f" {e.get('source', '')} {e.get('detail', '')}" if e.get("stage") == "tool" else "")
                for e in events
            ]
            yield "\n".join(lines)
        elif sub in {"block", "unblock"} and len(words) > 1:
            user = parse_user(words[1])
            if sub == "block":
                await r.sadd(key, user)
                await r.incr(safety.keys.blocked_version())  # after the set: caches re-read it (views.py)
                yield f"Blocked {user}: I will ignore them in this workspace. Undo: /safety unblock {user}."
            else:
                gone = await r.srem(key, user)
                await r.incr(safety.keys.blocked_version())
                yield f"Unblocked {user}." if gone else f"{user} was not blocked."
        elif sub == "blocked":
            members: Any = await r.smembers(key)
            yield ("Blocked here: " + ", ".join(sorted(members))) if members else "Nobody is blocked here."
        else:
            yield f"Usage: /safety {USAGE}"

    return Command(
        "safety",
        "Moderation and limits: status, recent events, block or unblock a user (admins)",
        handler,
        usage=USAGE,
        args_description="status, events [n], block <user>, unblock <user> or blocked",
        admin_only=True,
        ephemeral=True,
    )


async def _status(safety: Safety, ctx: TurnContext) -> str:
    """What a workspace's admin may see: the shared configuration, and counters of their workspace only (the
    endpoint's address and other workspaces' figures are the operator's, in logs and /metrics)."""
    place = ctx.turn.place
    p, lim = safety.profile, safety.admission.limits
    lines = [f"*Safety*: {p.describe()}."]
    if p.endpoint and safety.endpoint is not None:
        lines.append("Moderation endpoint: in use.")
    elif p.endpoint:
        lines.append("Moderation endpoint: configured in the profile but switched off for this process.")
    rates = ", ".join(f"{w.count} per {w.seconds:g}s" for w in lim.user_rate) or "none"
    channel = ", ".join(f"{w.count} per {w.seconds:g}s" for w in lim.channel_rate) or "none"
    lines.append(f"Rate limits: user {rates}; channel {channel}.")
    lines.append(
        f"Token quotas per {lim.quota_window_seconds}s: user {lim.user_tokens or 'none'}, "
        f"workspace {lim.workspace_tokens or 'none'}; "
        f"concurrent generations: {lim.max_concurrent or 'no limit'}."
    )
    media = ctx.media
    if media is not None and "imagine" in ctx.commands:
        lines.append(await media.quotas.status(place))
    counters = await safety.events.counters(platform=place.platform, workspace=place.workspace)
    if counters:
        top = sorted(counters.items(), key=lambda kv: -kv[1])[:12]
        lines.append("Counters here: " + ", ".join(f"{k}={v}" for k, v in top))
    else:
        lines.append("Counters here: no moderation decisions recorded.")
    return "\n".join(lines)
