"""Who did what in the console: one Redis stream, ``console:audit``, an entry per action of an account.

Fields: ``account``, ``role``, ``action`` (sign_in, sign_in_failed, sign_out, reply, assign, status, note,
resume, block, unblock, user_add, user_remove), ``target`` (a conversation id or a user) and ``detail``
(never a password, never the text of a reply: its length only). Capped at ``MAXLEN`` entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from core.keys import KeySpace

MAXLEN = 20_000
log = structlog.get_logger("parley.console")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    ms: int
    account: str
    role: str
    action: str
    target: str
    detail: str


class AuditLog:
    def __init__(self, client: aioredis.Redis, keys: KeySpace) -> None:
        self._r = client
        self.stream = keys.scoped("console", "audit")

    async def record(self, account: str, role: str, action: str, target: str = "", detail: str = "") -> None:
        """Never fails the action: a Redis error is logged (with the same fields)."""
        fields: Mapping[str, str] = {
            "account": account,
            "role": role,
            "action": action,
            "target": target,
            "detail": detail,
        }
        try:
            await self._r.xadd(self.stream, dict(fields), maxlen=MAXLEN, approximate=True)  # type: ignore[arg-type]
        except RedisError as exc:
            log.warning("console_audit_not_saved", error=type(exc).__name__, **fields)

    async def recent(self, limit: int = 200, account: str = "") -> list[AuditEntry]:
        raw: Any = await self._r.xrevrange(self.stream, count=limit if not account else limit * 10)
        out = []
        for entry_id, f in raw:
            if account and f.get("account") != account:
                continue
            out.append(
                AuditEntry(
                    int(entry_id.split("-")[0]),
                    f.get("account", ""),
                    f.get("role", ""),
                    f.get("action", ""),
                    f.get("target", ""),
                    f.get("detail", ""),
                )
            )
            if len(out) >= limit:
                break
        return out
