"""Queue items, pure: a :class:`Turn` plus a :class:`Route` <-> one JSON string.

A :class:`Route` is the small record a Delivery needs to show the reply where the question was asked
(Slack: team, channel, thread_ts; Discord: channel and message ids, or an interaction token). It holds
strings only, and no secrets: a worker looks credentials up itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from core.types import Author, CommandCall, ImageRef, Place, Turn

VERSION = 1
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Route:
    platform: str  # the Delivery that shows the reply (usually the turn's platform)
    data: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Job:
    turn: Turn
    route: Route
    enqueued_at: float = field(default_factory=time.time)
    attempt: int = 1  # 2+ when a worker took it over from one that died or handed it back

    @property
    def job_id(self) -> str:
        return self.turn.turn_id


def encode_job(job: Job) -> str:
    t = job.turn
    body: dict[str, Any] = {
        "v": VERSION,
        "a": [t.author.id, t.author.display_name, t.author.is_bot, t.author.is_admin],
        "p": [t.place.platform, t.place.workspace, t.place.channel, t.place.thread],
        "x": t.text,
        "m": t.message_id,
        "ad": t.addressed,
        "e": t.event_id,
        "r": t.received_at,
        "id": t.turn_id,
        "rt": [job.route.platform, dict(job.route.data)],
        "q": job.enqueued_at,
    }
    if t.command is not None:
        body["c"] = [t.command.name, t.command.args, dict(t.command.options)]
    if t.images:  # references only: a worker fetches the bytes itself
        body["im"] = [[i.url, i.mime, i.size, i.name, i.caption, i.id] for i in t.images]
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def decode_job(raw: str) -> Job:
    """The inverse of :func:`encode_job`; ``ValueError`` for anything else."""
    try:
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("v") != VERSION:
            raise ValueError(
                f"unknown queue item version {body.get('v') if isinstance(body, dict) else None!r}"
            )
        uid, name, is_bot, is_admin = body["a"]
        platform, workspace, channel, thread = body["p"]
        command = None
        if "c" in body:
            cname, cargs, coptions = body["c"]
            command = CommandCall(
                str(cname), str(cargs), MappingProxyType({str(k): str(v) for k, v in coptions.items()})
            )
        route_platform, route_data = body["rt"]
        turn = Turn(
            author=Author(str(uid), str(name), bool(is_bot), bool(is_admin)),
            place=Place(str(platform), str(workspace), str(channel), str(thread)),
            text=str(body["x"]),
            message_id=str(body.get("m", "")),
            addressed=bool(body.get("ad", True)),
            event_id=str(body.get("e", "")),
            command=command,
            received_at=float(body.get("r", 0.0)),
            turn_id=str(body["id"]),
            images=tuple(
                ImageRef(str(u), str(m), int(n), str(fn), str(c), str(i))
                for u, m, n, fn, c, i in body.get("im", [])
            ),
        )
        route = Route(str(route_platform), MappingProxyType({str(k): str(v) for k, v in route_data.items()}))
        return Job(turn, route, float(body.get("q", 0.0)))
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed queue item: {type(exc).__name__}: {exc}") from None


def encode_place(place: Place) -> str:
    return json.dumps([place.platform, place.workspace, place.channel, place.thread], separators=(",", ":"))


def decode_place(raw: str) -> Place:
    try:
        platform, workspace, channel, thread = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed place: {exc}") from None
    return Place(str(platform), str(workspace), str(channel), str(thread))
