"""Sign-in limits that slow a guesser down without locking the operator out.

Failed sign-ins are counted per account and per *bucket*, and past ``attempts`` failures each further one
doubles a wait (``base`` seconds, capped at ``cap``); a success clears the bucket.

- A browser that signed in to an account before holds a *device cookie* (a random token; Redis keeps its
  SHA-256 and the account it belongs to). Its attempts on that account count in a bucket of its own, so a
  guesser elsewhere (who has no such cookie) cannot make the operator wait: the OWASP "device cookie" scheme.
- Every other attempt on the account counts in the account's shared ``anon`` bucket, whatever the address:
  spreading guesses over many addresses does not help.
- Attempts without a device cookie are also counted per client address in a fixed window (any account), so
  one address cannot walk through many account names. The address is the peer's, or, when the peer is a
  configured trusted proxy, the nearest untrusted address in ``X-Forwarded-For``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from core.keys import KeySpace

DEVICE_COOKIE = "parley_console_device"
DEVICE_DAYS = 90
ADDRESS_WINDOW = 300
_FAIL = """
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
local over = fails - tonumber(ARGV[1])
if over >= 0 then
  local wait = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * (2 ^ over))
  redis.call('HSET', KEYS[1], 'until', tonumber(ARGV[4]) + wait)
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return fails
"""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def client_address(peer: str | None, forwarded_for: str, trusted: Sequence[Network]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the rightmost address of
    ``X-Forwarded-For`` that is not itself a trusted proxy (addresses left of it could be forged)."""
    address = peer or "unknown"
    if not trusted or not _within(address, trusted):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _within(hop, trusted):
            return hop
    return address


def _within(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class LoginLimiter:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        *,
        attempts: int,
        base_seconds: float = 1.0,
        cap_seconds: float = 900.0,
    ) -> None:
        self._r = client
        self._keys = keys
        self.attempts = attempts
        self.base = base_seconds
        self.cap = cap_seconds
        self._fail = client.register_script(_FAIL)

    def _bucket_key(self, account: str, bucket: str) -> str:
        return self._keys.scoped("console", "signin", _digest(account), bucket)

    def _device_key(self, token: str) -> str:
        return self._keys.scoped("console", "device", _digest(token))

    async def bucket(self, account: str, device: str | None) -> str:
        """``device:<id>`` when the cookie belongs to this account, else ``anon``."""
        if device and len(device) <= 200:
            owner: Any = await self._r.get(self._device_key(device))
            if owner == account:
                return "device-" + _digest(device)[:16]
        return "anon"

    async def wait(self, account: str, bucket: str, *, now: float | None = None) -> float:
        """Seconds before this bucket may try again (0: now)."""
        until: Any = await self._r.hget(self._bucket_key(account, bucket), "until")
        now = time.time() if now is None else now
        return max(0.0, float(until) - now) if until else 0.0

    async def address_allowed(self, address: str) -> bool:
        """Count an attempt from ``address`` (one without a device cookie); False past the window's limit."""
        key = self._keys.scoped("console", "login", _digest(address))
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=ADDRESS_WINDOW, nx=True)
            pipe.incr(key)
            _, count = await pipe.execute()
        return int(count) <= self.attempts

    async def failed(self, account: str, bucket: str, *, now: float | None = None) -> int:
        now = time.time() if now is None else now
        ttl = int(self.cap * 4) + 3600
        args = [self.attempts, self.base, self.cap, now, ttl]
        return int(await self._fail(keys=[self._bucket_key(account, bucket)], args=args))

    async def succeeded(self, account: str, bucket: str) -> None:
        await self._r.delete(self._bucket_key(account, bucket))

    async def new_device(self, account: str) -> str:
        """A device cookie for a browser that just signed in to ``account``."""
        token = secrets.token_urlsafe(32)
        await self._r.set(self._device_key(token), account, ex=DEVICE_DAYS * 86_400)
        return token
