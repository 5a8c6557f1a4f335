"""Side-effecting calls wait here for the asking user's click (Redis, with a TTL).

A pending call holds the exact arguments shown to the user and the model's conversation so far (without the
system prompt, which is rebuilt when the call resumes; tool results in it are redacted). :meth:`take` hands
it out once, and only to the user it was proposed to: a second click, another user, or a click after the
TTL gets nothing.

Whoever can write to Redis must not be able to change what a click runs: with signing keys
(``PARLEY_CREDENTIALS_KEYS``, the queue's keys under another purpose label) each stored call carries an
HMAC-SHA256 over its whole record (id, user, place, tool, exact arguments, conversation, expiry); a record
whose MAC is missing or wrong is refused as ``forged``, one past its signed expiry as ``expired``. A taken
call leaves a tombstone (``handled:<tool>``) until its TTL, so a double click is told "already answered"
and audited as such, naming the tool.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.exceptions import RedisError

from core.credentials import key_material
from core.errors import StoreError
from core.keys import KeySpace
from core.llm import ChatMessage, ToolCall
from core.types import Turn


@dataclass(frozen=True, slots=True)
class PendingCall:
    id: str
    user: str
    platform: str
    workspace: str
    channel: str
    tool: str
    arguments: dict[str, Any]
    call_id: str
    messages: list[dict[str, Any]]  # the model's conversation so far, system prompt left out
    model: str
    temperature: float
    max_tokens: int
    next_round: int
    meta: dict[str, str] = field(default_factory=dict)
    expires_at: float = 0.0  # epoch seconds, set when stored; covered by the MAC

    def chat_messages(self) -> list[ChatMessage]:
        out = []
        for m in self.messages:
            calls = tuple(ToolCall(**c) for c in m.get("tool_calls", ()))
            out.append(ChatMessage(m["role"], m["content"], calls, m.get("tool_call_id", "")))
        return out


def dump_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    return [
        {
            "role": m.role,
            "content": m.content,
            "tool_calls": [asdict(c) for c in m.tool_calls],
            "tool_call_id": m.tool_call_id,
        }
        for m in messages
        if m.role != "system"
    ]


def new_id() -> str:
    return secrets.token_urlsafe(9)


class PendingSigner:
    """MACs over pending calls (the newest key signs, any configured key verifies; no keys: development,
    nothing signed or checked)."""

    PURPOSE = b"parley pending tool call v1"

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._keys = tuple(keys)

    @classmethod
    def from_keys(cls, raw: SecretStr | None) -> PendingSigner:
        return cls(key_material(raw, cls.PURPOSE))

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @staticmethod
    def _payload(record: dict[str, Any]) -> bytes:
        return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()

    def sign(self, record: dict[str, Any]) -> str:
        return (
            hmac.new(self._keys[0], self._payload(record), hashlib.sha256).hexdigest() if self._keys else ""
        )

    def verify(self, record: dict[str, Any], mac: str) -> bool:
        payload = self._payload(record)
        return any(
            hmac.compare_digest(hmac.new(k, payload, hashlib.sha256).hexdigest(), mac) for k in self._keys
        )


HANDLED = "handled:"  # the tombstone a taken call leaves: "handled:<tool>"

# Swap the record for its tombstone only if it is still the record the caller checked (one winner).
_TAKE = """
local raw = redis.call('GET', KEYS[1])
if raw ~= ARGV[1] then return raw end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return true
"""


class PendingStore:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        *,
        ttl_seconds: int,
        signer: PendingSigner | None = None,
    ) -> None:
        self._r = client
        self._keys = keys
        self.ttl = ttl_seconds
        self.signer = signer or PendingSigner(())
        self._take = client.register_script(_TAKE)

    def key(self, pending_id: str) -> str:
        return self._keys.scoped("tools", "pending", pending_id)

    async def save(self, pending: PendingCall) -> PendingCall:
        """Store ``pending`` with its expiry (and MAC); returns it as stored."""
        stored = PendingCall(**{**asdict(pending), "expires_at": round(time.time() + self.ttl, 3)})
        record = asdict(stored)
        body = {"call": record, "mac": self.signer.sign(record)}
        try:
            await self._r.set(self.key(stored.id), json.dumps(body, ensure_ascii=False), ex=self.ttl)
        except RedisError as exc:
            raise StoreError(f"cannot store a pending tool call: {type(exc).__name__}") from exc
        return stored

    async def _read(self, pending_id: str) -> tuple[str | None, PendingCall | None, str]:
        """(raw, call, why): the call when it is intact and unexpired, else why not (``expired``,
        ``forged``, ``already_handled``; ``tool`` of a tombstone in ``raw``)."""
        try:
            raw: Any = await self._r.get(self.key(pending_id))
        except RedisError as exc:
            raise StoreError(f"cannot read a pending tool call: {type(exc).__name__}") from exc
        if not raw:
            return None, None, "expired"
        raw = raw.decode() if isinstance(raw, bytes) else str(raw)
        if raw.startswith(HANDLED):
            return raw, None, "already_handled"
        try:
            body = json.loads(raw)
            record = body["call"]
            mac = str(body.get("mac", ""))
            pending = PendingCall(**record)
        except (ValueError, TypeError, KeyError):
            return raw, None, "forged"
        if self.signer.enabled and not self.signer.verify(record, mac):
            return raw, pending, "forged"
        if pending.expires_at and pending.expires_at < time.time():
            return raw, pending, "expired"
        return raw, pending, ""

    async def state(self, pending_id: str) -> tuple[str, str, str]:
        """(user it waits for, tool, why not: '' while it waits, else ``expired``, ``forged`` or
        ``already_handled``) - what a click is told before it becomes a turn."""
        raw, pending, why = await self._read(pending_id)
        if pending is not None:
            return (pending.user if not why else ""), pending.tool, why
        tool = raw[len(HANDLED) :] if raw and raw.startswith(HANDLED) else ""
        return "", tool, why

    async def tool_of(self, pending_id: str) -> str:
        """The tool a pending (or handled) call names, for a failed click's message and audit ('')."""
        raw, pending, _ = await self._read(pending_id)
        if pending is not None:
            return pending.tool
        return raw[len(HANDLED) :] if raw and raw.startswith(HANDLED) else ""

    async def take(self, pending_id: str, turn: Turn) -> tuple[PendingCall | None, str]:
        """The call, once, for the user it was proposed to; else ``(None, why)``: ``expired``, ``forged``
        (altered or written without the key), ``not_yours`` or ``already_handled``."""
        raw, pending, why = await self._read(pending_id)
        if why or pending is None or raw is None:
            return None, why or "expired"
        a, p = turn.author, turn.place
        if (pending.user, pending.platform, pending.workspace) != (a.id, p.platform, p.workspace):
            return None, "not_yours"
        try:
            won = await self._take(keys=[self.key(pending_id)], args=[raw, HANDLED + pending.tool])
        except RedisError as exc:
            raise StoreError(f"cannot take a pending tool call: {type(exc).__name__}") from exc
        if won != 1 and won is not True:  # a double click (or a rewrite) got there first
            return None, "already_handled"
        return pending, ""

    async def discard(self, pending_id: str) -> None:
        """Forget a call that must not be confirmed (its question could not be shown as it would run)."""
        try:
            await self._r.delete(self.key(pending_id))
        except RedisError as exc:
            raise StoreError(f"cannot discard a pending tool call: {type(exc).__name__}") from exc
