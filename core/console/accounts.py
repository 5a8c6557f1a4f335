"""Operator accounts: people with a role, stored in Redis, passwords hashed with Argon2id.

``parley console user add NAME --role agent`` writes one field of the hash ``console:accounts``
(``name -> {"role", "hash", "created"}``); the hash string carries its own salt and parameters (argon2-cffi's
PHC format), so raising the cost later only needs a rehash at the next sign-in.

Roles, each including the one below it:

    admin   everything, and the audit page
    agent   answers customers: reply, assign, notes, status, resume, block and unblock
    viewer  reads every page, changes nothing

The shared ``PARLEY_CONSOLE_PASSWORD`` keeps working for a single operator: it signs in as the account
``operator`` with the admin role (the name is reserved, so no stored account can take it).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.errors import ConfigError
from core.keys import KeySpace

SHARED_ACCOUNT = "operator"
NAME_RULE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")
MIN_PASSWORD = 12


class Role(StrEnum):
    ADMIN = "admin"
    AGENT = "agent"
    VIEWER = "viewer"


_RANK = {Role.VIEWER: 0, Role.AGENT: 1, Role.ADMIN: 2}


def allows(role: Role, needed: Role) -> bool:
    return _RANK[role] >= _RANK[needed]


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    created: float = 0.0


def check_name(name: str) -> str:
    name = name.strip().lower()
    if not NAME_RULE.match(name):
        raise ConfigError(
            f"account name {name!r}: use 1-40 lowercase letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    if name == SHARED_ACCOUNT:
        raise ConfigError(
            f"account name {SHARED_ACCOUNT!r} is reserved for the shared PARLEY_CONSOLE_PASSWORD"
        )
    return name


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise ConfigError(f"role {role!r}: use one of {', '.join(r.value for r in Role)}") from None


class Accounts:
    """The stored accounts of one bot. Hashing and verifying are CPU-heavy: the async methods run them in
    a thread via the caller (see :meth:`verify`)."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace, hasher: PasswordHasher | None = None) -> None:
        self._r = client
        self.key = keys.scoped("console", "accounts")
        self._hasher = hasher or PasswordHasher()
        # Verified against when the account does not exist, so a wrong name costs as long as a wrong password.
        self._dummy = self._hasher.hash("parley-console-no-such-account")

    def hash(self, password: str) -> str:
        if len(password) < MIN_PASSWORD:
            raise ConfigError(f"the password must be at least {MIN_PASSWORD} characters")
        return self._hasher.hash(password)

    async def add(self, name: str, role: Role, password_hash: str, *, replace: bool = False) -> Account:
        name = check_name(name)
        record = json.dumps({"role": role.value, "hash": password_hash, "created": round(time.time(), 3)})
        if replace:
            await self._r.hset(self.key, name, record)
        elif not await self._r.hsetnx(self.key, name, record):
            raise ConfigError(f"account {name!r} exists already (use --replace to change it)")
        return Account(name, role)

    async def remove(self, name: str) -> bool:
        return bool(await self._r.hdel(self.key, name.strip().lower()))

    async def all(self) -> list[Account]:
        raw: Any = await self._r.hgetall(self.key)
        out = []
        for name, record in sorted(raw.items()):
            data = _parse(record)
            if data is not None:
                out.append(
                    Account(name, check_role(data.get("role", "viewer")), float(data.get("created", 0)))
                )
        return out

    async def stored_hash(self, name: str) -> tuple[Account, str] | None:
        record: Any = await self._r.hget(self.key, name.strip().lower())
        data = _parse(record) if record else None
        if data is None or "hash" not in data:
            return None
        try:
            role = Role(data.get("role", ""))
        except ValueError:
            return None
        return Account(name.strip().lower(), role, float(data.get("created", 0))), str(data["hash"])

    def verify(self, stored: str | None, attempt: str) -> bool:
        """CPU-heavy (Argon2): call it in a thread. ``stored`` None still spends the time."""
        try:
            return self._hasher.verify(stored or self._dummy, attempt) and stored is not None
        except (VerificationError, InvalidHashError):
            return False


def _parse(record: str | None) -> dict[str, Any] | None:
    try:
        data = json.loads(record or "")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
