"""Queue items, pure: a :class:`Turn` plus a :class:`Route` <-> one JSON string.

A :class:`Route` is the small record a Delivery needs to show the reply where the question was asked
(Slack: team, channel, thread_ts; Discord: channel and message ids, or an interaction token id). It holds
strings only, and no secrets: a worker looks credentials up itself.

A queue item carries what the adapter established about its author (``is_admin``, who, where), and a worker
acts on it. So that whoever can write to Redis cannot forge an admin's command, items are signed: with a
:class:`JobSigner` (HMAC-SHA256, keys derived from ``PARLEY_CREDENTIALS_KEYS``, signing with the first and
accepting any, so rotation needs no draining) an item ends in ``,"s":"<hex>"}`` over the exact bytes before
it, and :func:`decode_job` refuses an item whose signature is missing or wrong. Without keys (development
only) items are neither signed nor checked.

A signature alone does not stop a replay: a captured item pushed back into an inbox is still signed. So
items carry their issue time (``q``) and a random nonce (``n``) under the signature, and a worker runs an
item only through :class:`core.ops.replay.JobGuard`: older than ``PARLEY_JOB_MAX_AGE_SECONDS`` is refused
as ``job_expired``, a nonce seen before as ``job_replayed`` (nonces are kept in Redis for that age).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import SecretStr

from core.credentials import key_material
from core.types import AudioRef, Author, CommandCall, ImageRef, Place, Turn

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
    nonce: str = field(default_factory=lambda: secrets.token_hex(12))  # single use: see core/ops/replay.py

    @property
    def job_id(self) -> str:
        return self.turn.turn_id


_SIGNED = re.compile(r'(\{.*),"s":"([0-9a-f]{64})"\}', re.DOTALL)


class JobSigner:
    """Signs queue items and checks them (HMAC-SHA256; the newest key signs, any configured key verifies)."""

    PURPOSE = b"parley queue item signature v1"

    def __init__(self, keys: Sequence[bytes], *, max_age_seconds: float = 3600.0) -> None:
        self._keys = tuple(keys)
        self.max_age_seconds = max_age_seconds  # workers refuse signed items older than this

    @classmethod
    def from_keys(cls, raw: SecretStr | None, *, max_age_seconds: float = 3600.0) -> JobSigner:
        """From ``Settings.parley_credentials_keys`` (no keys: a signer that signs and checks nothing)."""
        return cls(key_material(raw, cls.PURPOSE), max_age_seconds=max_age_seconds)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def sign(self, payload: str) -> str:
        return hmac.new(self._keys[0], payload.encode(), hashlib.sha256).hexdigest()

    def verify(self, payload: str, signature: str) -> bool:
        return any(
            hmac.compare_digest(hmac.new(k, payload.encode(), hashlib.sha256).hexdigest(), signature)
            for k in self._keys
        )


def encode_job(job: Job, signer: JobSigner | None = None) -> str:
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
        "n": job.nonce,
    }
    if t.place.is_direct:  # absent means not direct (items queued before the flag existed, too)
        body["dm"] = True
    if t.command is not None:
        body["c"] = [t.command.name, t.command.args, dict(t.command.options)]
    if t.images:  # references only: a worker fetches the bytes itself
        body["im"] = [[i.url, i.mime, i.size, i.name, i.caption, i.id] for i in t.images]
    if t.audio:  # references only, like images
        body["au"] = [[a.url, a.mime, a.size, a.name, a.id, a.duration, a.voice] for a in t.audio]
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    if signer is None or not signer.enabled:
        return payload
    return f'{payload[:-1]},"s":"{signer.sign(payload)}"}}'


def decode_job(raw: str, signer: JobSigner | None = None) -> Job:
    """The inverse of :func:`encode_job`; ``ValueError`` for anything else, and (with an enabled ``signer``)
    for an item whose signature is missing or does not match: a forged or altered item."""
    if signer is not None and signer.enabled:
        signed = _SIGNED.fullmatch(raw)
        if signed is None or not signer.verify(signed.group(1) + "}", signed.group(2)):
            raise ValueError("queue item signature missing or invalid (forged, altered, or a retired key)")
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
            place=Place(
                str(platform), str(workspace), str(channel), str(thread), bool(body.get("dm", False))
            ),
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
            audio=tuple(
                AudioRef(str(u), str(m), int(n), str(fn), str(i), float(d), bool(v))
                for u, m, n, fn, i, d, v in body.get("au", [])
            ),
        )
        route = Route(str(route_platform), MappingProxyType({str(k): str(v) for k, v in route_data.items()}))
        return Job(turn, route, float(body.get("q", 0.0)), nonce=str(body.get("n", "")))
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
