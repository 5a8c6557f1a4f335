"""Side-effecting calls wait here for the asking user's click (Redis, with a TTL).

A pending call holds the exact arguments shown to the user and the model's conversation so far (without the
system prompt, which is rebuilt when the call resumes; tool results in it are redacted). :meth:`take` hands
it out once, and only to the user it was proposed to: a second click, another user, or a click after the
TTL gets nothing.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

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


class PendingStore:
    def __init__(self, client: aioredis.Redis, keys: KeySpace, *, ttl_seconds: int) -> None:
        self._r = client
        self._keys = keys
        self.ttl = ttl_seconds

    def key(self, pending_id: str) -> str:
        return self._keys.scoped("tools", "pending", pending_id)

    async def save(self, pending: PendingCall) -> None:
        try:
            await self._r.set(self.key(pending.id), json.dumps(asdict(pending)), ex=self.ttl)
        except RedisError as exc:
            raise StoreError(f"cannot store a pending tool call: {type(exc).__name__}") from exc

    async def peek(self, pending_id: str) -> PendingCall | None:
        try:
            raw: Any = await self._r.get(self.key(pending_id))
        except RedisError as exc:
            raise StoreError(f"cannot read a pending tool call: {type(exc).__name__}") from exc
        return PendingCall(**json.loads(raw)) if raw else None

    async def take(self, pending_id: str, turn: Turn) -> tuple[PendingCall | None, str]:
        """The call, once, for the user it was proposed to; else ``(None, why)``."""
        pending = await self.peek(pending_id)
        if pending is None:
            return None, "expired"
        a, p = turn.author, turn.place
        if (pending.user, pending.platform, pending.workspace) != (a.id, p.platform, p.workspace):
            return None, "not_yours"
        try:
            won = await self._r.delete(self.key(pending_id))
        except RedisError as exc:
            raise StoreError(f"cannot take a pending tool call: {type(exc).__name__}") from exc
        if not won:  # a double click: the first one won
            return None, "already_handled"
        return pending, ""
