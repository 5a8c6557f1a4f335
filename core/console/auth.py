"""Sign-in for the operator console: accounts (:mod:`core.console.accounts`) or the shared password,
sessions in Redis, CSRF tokens; the limits on guessing are in :mod:`core.console.limits`.

- The shared password is kept in memory only as a salted scrypt hash (made at start-up) and compared in
  constant time; it is never logged. Accounts' passwords are Argon2id hashes in Redis.
- A session is a random token in an HttpOnly, SameSite=Strict cookie (Secure behind HTTPS); Redis holds
  only the token's SHA-256, with the session's CSRF token, account and role, and expires it.
- Every form carries a CSRF token: the session's once signed in, a double-submit cookie on the login form.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr

from core.console.accounts import SHARED_ACCOUNT, Account, Accounts, Role
from core.console.limits import LoginLimiter
from core.keys import KeySpace

SESSION_COOKIE = "parley_console"
LOGIN_CSRF_COOKIE = "parley_console_login"


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    csrf: str
    account: str = SHARED_ACCOUNT
    role: Role = Role.ADMIN


class ConsoleAuth:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        password: SecretStr | None,
        *,
        session_seconds: int,
        login_attempts: int,
        accounts: Accounts | None = None,
    ) -> None:
        self._r = client
        self._keys = keys
        self._salt = secrets.token_bytes(16)
        self._hash = _scrypt(password.get_secret_value(), self._salt) if password is not None else None
        self.session_seconds = session_seconds
        self.accounts = accounts or Accounts(client, keys)
        self.limiter = LoginLimiter(client, keys, attempts=login_attempts)

    @property
    def shared(self) -> bool:
        """The shared password signs in (as the account ``operator``)."""
        return self._hash is not None

    def _session_key(self, token: str) -> str:
        digest = hashlib.sha256(token.encode()).hexdigest()
        return self._keys.scoped("console", "session", digest)

    def password_ok(self, attempt: str) -> bool:
        """The shared password. CPU-heavy (scrypt): call it in a thread."""
        if self._hash is None:
            return False
        return hmac.compare_digest(_scrypt(attempt, self._salt), self._hash)

    async def check(self, name: str, attempt: str) -> Account | None:
        """The account these credentials open (None: wrong name or password). An empty name (or
        ``operator``) is the shared password. The hashing runs in a thread."""
        name = name.strip().lower()
        if not name or name == SHARED_ACCOUNT:
            ok = await asyncio.to_thread(self.password_ok, attempt)
            return Account(SHARED_ACCOUNT, Role.ADMIN) if ok else None
        found = await self.accounts.stored_hash(name)
        stored = found[1] if found else None
        ok = await asyncio.to_thread(self.accounts.verify, stored, attempt)
        return found[0] if ok and found else None

    async def open_session(self, account: Account | None = None) -> Session:
        account = account or Account(SHARED_ACCOUNT, Role.ADMIN)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), account.name, account.role)
        record = json.dumps({"csrf": session.csrf, "account": account.name, "role": account.role.value})
        await self._r.set(self._session_key(session.token), record, ex=self.session_seconds)
        return session

    async def session(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        raw: Any = await self._r.get(self._session_key(token))
        try:
            data = json.loads(raw) if raw else None
            if not data:
                return None
            session = Session(token, str(data["csrf"]), str(data["account"]), Role(data["role"]))
        except (ValueError, KeyError, TypeError):
            return None  # a session of an older version: sign in again
        if session.account == SHARED_ACCOUNT:
            return session if self.shared else None
        # A removed account's sessions end now; a changed role applies at the next request.
        found = await self.accounts.stored_hash(session.account)
        return replace(session, role=found[0].role) if found else None

    async def close_session(self, token: str) -> None:
        await self._r.delete(self._session_key(token))


def same_token(given: str | None, expected: str | None) -> bool:
    return bool(given and expected) and hmac.compare_digest(str(given), str(expected))
