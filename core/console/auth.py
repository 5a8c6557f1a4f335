"""Sign-in for the operator console: one shared password, sessions in Redis, CSRF tokens, a login limit.

- The password is kept in memory only as a salted scrypt hash (made at start-up) and compared in
  constant time; it is never logged.
- A session is a random token in an HttpOnly, SameSite=Strict cookie (Secure behind HTTPS); Redis holds
  only the token's SHA-256, with the session's CSRF token, and expires it.
- Every form carries a CSRF token: the session's once signed in, a double-submit cookie on the login form.
- Login attempts are counted per client address in a fixed 5-minute window.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr

from core.keys import KeySpace

SESSION_COOKIE = "parley_console"
LOGIN_CSRF_COOKIE = "parley_console_login"
LOGIN_WINDOW = 300


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    csrf: str


class ConsoleAuth:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        password: SecretStr,
        *,
        session_seconds: int,
        login_attempts: int,
    ) -> None:
        self._r = client
        self._keys = keys
        self._salt = secrets.token_bytes(16)
        self._hash = _scrypt(password.get_secret_value(), self._salt)
        self.session_seconds = session_seconds
        self.login_attempts = login_attempts

    def _session_key(self, token: str) -> str:
        digest = hashlib.sha256(token.encode()).hexdigest()
        return self._keys.scoped("console", "session", digest)

    def password_ok(self, attempt: str) -> bool:
        """CPU-heavy (scrypt): call it in a thread."""
        return hmac.compare_digest(_scrypt(attempt, self._salt), self._hash)

    async def allow_attempt(self, client_address: str) -> bool:
        """Count a login attempt; False once the address made too many in the window."""
        key = self._keys.scoped("console", "login", hashlib.sha256(client_address.encode()).hexdigest()[:32])
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=LOGIN_WINDOW, nx=True)  # the window starts with the first attempt
            pipe.incr(key)  # keeps the TTL
            _, count = await pipe.execute()
        return int(count) <= self.login_attempts

    async def open_session(self) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        await self._r.set(self._session_key(session.token), session.csrf, ex=self.session_seconds)
        return session

    async def session(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        csrf: Any = await self._r.get(self._session_key(token))
        return Session(token, str(csrf)) if csrf else None

    async def close_session(self, token: str) -> None:
        await self._r.delete(self._session_key(token))


def same_token(given: str | None, expected: str | None) -> bool:
    return bool(given and expected) and hmac.compare_digest(str(given), str(expected))
