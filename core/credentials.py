"""Credentials at rest: what the bot keeps in Redis that could act on a platform (Slack installation records
with their bot tokens, slash commands' ``response_url``s, Discord interaction tokens) is encrypted.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with :class:`~cryptography.fernet.MultiFernet` for
rotation. ``PARLEY_CREDENTIALS_KEYS`` holds one or more Fernet keys, comma-separated, newest first: new
values are sealed with the first, and any of them opens a value. Rotating is: put a new key first, roll out,
re-seal the long-lived records (``parley rotate-credentials``; short-lived values expire within 30 minutes),
then drop the old key (deploy/README.md, "Credential encryption").

A sealed value reads ``enc1:<fernet token>``. Without keys (development only: production refuses to start)
values are stored as they are and a warning says so once; a value stored in clear before keys were set is
still read, and re-sealed when it is next written or rotated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from core.errors import ConfigError, CredentialError

log = structlog.get_logger("parley.credentials")

PREFIX = "enc1:"
VARIABLE = "PARLEY_CREDENTIALS_KEYS"
GENERATE = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


__all__ = ["CredentialBox", "CredentialError", "key_material", "parse_keys"]


def parse_keys(raw: SecretStr | None) -> list[Fernet]:
    """The configured keys, newest first (a bad one: ``ConfigError`` naming the variable, never the value)."""
    if raw is None or not raw.get_secret_value().strip():
        return []
    keys = []
    for i, part in enumerate(p.strip() for p in raw.get_secret_value().split(",")):
        try:
            keys.append(Fernet(part.encode()))
        except (ValueError, TypeError):
            raise ConfigError(
                f"{VARIABLE}: key #{i + 1} is not a Fernet key (32 url-safe base64-encoded bytes; make one "
                f"with: {GENERATE})"
            ) from None
    return keys


def key_material(raw: SecretStr | None, purpose: bytes) -> list[bytes]:
    """A 32-byte key per configured Fernet key, for ``purpose`` only (HMAC-SHA256 of the key's bytes over
    the purpose label): another use of the secret, such as signing queue items, never reuses Fernet's keys."""
    parse_keys(raw)  # the same validation and error
    if raw is None or not raw.get_secret_value().strip():
        return []
    return [
        hmac.new(base64.urlsafe_b64decode(part.strip()), purpose, hashlib.sha256).digest()
        for part in raw.get_secret_value().split(",")
    ]


class CredentialBox:
    """Seals and opens credentials stored in Redis."""

    _warned = False

    def __init__(self, keys: Sequence[Fernet]) -> None:
        self._keys = tuple(keys)
        self._all = MultiFernet(list(self._keys)) if self._keys else None

    @classmethod
    def from_settings(cls, raw: SecretStr | None, *, production: bool) -> CredentialBox:
        keys = parse_keys(raw)
        if not keys and production:
            raise ConfigError(
                f"{VARIABLE} is not set: in production, credentials kept in Redis (Slack installations, "
                f"response URLs, Discord interaction tokens) must be encrypted. Make a key with: {GENERATE}"
            )
        if not keys and not CredentialBox._warned:
            CredentialBox._warned = True
            log.warning("credentials_stored_in_clear", hint=f"set {VARIABLE} to encrypt them")
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return self._all is not None

    def seal(self, value: str) -> str:
        if self._all is None:
            return value
        return PREFIX + self._all.encrypt(value.encode()).decode()

    def open(self, stored: str | bytes) -> str:
        """The value of :meth:`seal`'s output (a value stored in clear is returned as it is)."""
        if isinstance(stored, bytes):
            stored = stored.decode()
        if not stored.startswith(PREFIX):
            return stored
        if self._all is None:
            raise CredentialError(f"a stored credential is encrypted but {VARIABLE} is not set")
        try:
            return self._all.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise CredentialError(
                f"a stored credential cannot be decrypted with any key in {VARIABLE} (a retired key?)"
            ) from None

    def stale(self, stored: str) -> bool:
        """Whether ``stored`` should be re-sealed: in clear while keys exist, or not under the newest key."""
        if self._all is None:
            return False
        if not stored.startswith(PREFIX):
            return True
        try:
            self._keys[0].decrypt(stored[len(PREFIX) :].encode())
        except InvalidToken:
            return True
        return False

    def reseal(self, stored: str) -> str:
        """``stored`` sealed with the newest key (what rotation writes back)."""
        return self.seal(self.open(stored))
