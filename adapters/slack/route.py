"""Where a Slack turn's reply goes: :class:`~core.ops.jobs.Route` <-> :class:`SlackTarget`. Pure.

A Route travels with the turn through the durable queue, so it holds strings only and no secrets. A slash
command's ``response_url`` (it can post for 30 minutes) stays out of it: the adapter keeps it in Redis for
its lifetime under :func:`response_url_key`, and the Delivery reads it from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adapters.slack.places import PLATFORM as PLATFORM  # re-exported: app.py imports it from here
from core.keys import KeySpace
from core.ops.jobs import Route
from core.types import Turn

RESPONSE_URL_TTL = 30 * 60  # Slack accepts posts to a response_url for 30 minutes

Kind = Literal["message", "command"]


@dataclass(frozen=True, slots=True)
class SlackTarget:
    kind: Kind
    team: str
    channel: str
    thread_ts: str = ""  # reply in this thread ("" for a top-level DM or a channel command)
    user: str = ""  # who asked (streaming recipient, handoff notice)
    message_ts: str = ""  # the user's message (permalink for a handoff notice)
    assistant: bool = False  # an Assistant-panel thread: its "thinking" status is ours to clear
    private: bool = False  # answer only the caller (a command that named a thread by its link)


def target_for(turn: Turn, *, assistant: bool = False) -> SlackTarget:
    place = turn.place
    return SlackTarget(
        kind="command" if turn.command is not None else "message",
        team=place.workspace,
        channel=place.channel,
        thread_ts=place.thread,
        user=turn.author.id,
        message_ts=turn.message_id,
        assistant=assistant,
        # a command carries a thread only when it named one by its permalink: its answer is the caller's
        private=turn.command is not None and bool(place.thread),
    )


def route_for(target: SlackTarget) -> Route:
    return Route(
        PLATFORM,
        {
            "kind": target.kind,
            "team": target.team,
            "channel": target.channel,
            "thread_ts": target.thread_ts,
            "user": target.user,
            "message_ts": target.message_ts,
            "assistant": "1" if target.assistant else "",
            "private": "1" if target.private else "",
        },
    )


def target_of(route: Route) -> SlackTarget:
    """The inverse of :func:`route_for`; ``ValueError`` for a route that is not a Slack one."""
    data = route.data
    kind = data.get("kind", "")
    if route.platform != PLATFORM or kind not in ("message", "command") or not data.get("channel"):
        raise ValueError(f"not a Slack route: platform={route.platform!r} kind={kind!r}")
    return SlackTarget(
        kind="command" if kind == "command" else "message",
        team=data.get("team", ""),
        channel=data.get("channel", ""),
        thread_ts=data.get("thread_ts", ""),
        user=data.get("user", ""),
        message_ts=data.get("message_ts", ""),
        assistant=data.get("assistant", "") == "1",
        private=data.get("private", "") == "1",
    )


def response_url_key(keys: KeySpace, turn_id: str) -> str:
    return keys.scoped("slack", "response_url", turn_id)
