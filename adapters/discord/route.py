"""Where a queued Discord turn's reply goes: :class:`~core.ops.jobs.Route` <-> typed targets, pure.

A Route holds strings only and no secrets: the reply of a message turn goes to a channel (as a reply to the
user's message); the reply of a slash command goes into the interaction's deferred response, whose token
the gateway side keeps in Redis for the token's 15-minute life (:func:`interaction_token_key`), keyed by
the interaction id in the route.

Both kinds may carry an :class:`Origin`: where the user asked (the user's message, the guild and channel
names), so that any worker can write the moderators' notice of a flagged turn without asking Discord.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.keys import KeySpace
from core.ops.jobs import Route

PLATFORM = "discord"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the user asked, for the moderators: the channel (or thread) of the user's message, the
    message itself (None for a slash command) and the names shown as plain text (empty when unknown)."""

    channel_id: int
    message_id: int | None = None
    guild_name: str = ""
    channel_name: str = ""


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    """Answer in a channel, DM or thread; ``reply_to`` is the user's message (None: a plain message)."""

    channel_id: int
    guild_id: int | None = None
    reply_to: int | None = None
    typing: bool = True
    origin: Origin | None = None


@dataclass(frozen=True, slots=True)
class InteractionTarget:
    """Answer into a deferred interaction response, or in its channel once the token is (nearly) gone."""

    interaction_id: int
    application_id: int
    original_id: int  # the deferred response message ("thinking...")
    channel_id: int
    guild_id: int | None
    deadline: float  # epoch seconds after which the token must not be used any more
    ephemeral: bool = False
    origin: Origin | None = None


Target = ChannelTarget | InteractionTarget


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def route_for(target: Target) -> Route:
    data: dict[str, str]
    if isinstance(target, ChannelTarget):
        data = {
            "kind": "channel",
            "channel": str(target.channel_id),
            "guild": _opt(target.guild_id),
            "reply_to": _opt(target.reply_to),
            "typing": "1" if target.typing else "0",
        }
    else:
        data = {
            "kind": "interaction",
            "interaction": str(target.interaction_id),
            "app": str(target.application_id),
            "original": str(target.original_id),
            "channel": str(target.channel_id),
            "guild": _opt(target.guild_id),
            "deadline": f"{target.deadline:.3f}",
            "ephemeral": "1" if target.ephemeral else "0",
        }
    origin = target.origin
    if origin is not None:
        data |= {
            "origin_channel": str(origin.channel_id),
            "origin_message": _opt(origin.message_id),
            "origin_guild_name": origin.guild_name,
            "origin_channel_name": origin.channel_name,
        }
    return Route(PLATFORM, data)


def _int(data: Mapping[str, str], key: str) -> int | None:
    value = data.get(key, "")
    return int(value) if value else None


def _origin(data: Mapping[str, str]) -> Origin | None:
    channel = _int(data, "origin_channel")
    if channel is None:
        return None  # a route written before origins existed, or by a caller that had none
    return Origin(
        channel,
        _int(data, "origin_message"),
        data.get("origin_guild_name", ""),
        data.get("origin_channel_name", ""),
    )


def target_of(route: Route) -> Target:
    """The inverse of :func:`route_for`; ``ValueError`` for a route this adapter did not write."""
    data = route.data
    try:
        kind = data["kind"]
        channel = int(data["channel"])
        if kind == "channel":
            return ChannelTarget(
                channel,
                _int(data, "guild"),
                _int(data, "reply_to"),
                data.get("typing") == "1",
                _origin(data),
            )
        if kind == "interaction":
            return InteractionTarget(
                interaction_id=int(data["interaction"]),
                application_id=int(data["app"]),
                original_id=int(data["original"]),
                channel_id=channel,
                guild_id=_int(data, "guild"),
                deadline=float(data["deadline"]),
                ephemeral=data.get("ephemeral") == "1",
                origin=_origin(data),
            )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"not a Discord route: {type(exc).__name__}: {exc}") from None
    raise ValueError(f"not a Discord route: kind {data.get('kind')!r}")


def interaction_token_key(keys: KeySpace, interaction_id: int) -> str:
    return keys.scoped("discord", "interaction", str(interaction_id))
