"""Display names from ``users.info``, cached in Redis per workspace and user for a day.

The name fills :attr:`~core.types.Author.display_name`: the persona's ``{user_name}`` placeholder and the
speaker labels of shared threads. It is looked up in the adapter's accept task (after the ack, never before
it), so it travels with the turn through the queue; the moderators' notice of a worker process reads the
same cache. Slack is asked at most once per user and workspace per day, whichever replica asks:

    Redis hit                  -> the cached name ("" included: a known miss)
    users.info ok              -> profile.display_name, else real_name, else name; cached NAME_TTL
    users.info error (Slack    -> "" cached MISS_TTL (user_not_found, missing_scope: asking again soon
      answered)                   would fail the same way, and would cost a call per message)
    timeout, 429, 5xx, network -> "" not cached (the next message tries again)
    Redis unreadable           -> "" without asking Slack (the turn goes on; the engine reports Redis)

A display name is user-chosen text that lands in the system prompt, so it is cleaned: control and format
characters dropped, whitespace collapsed, at most ``MAX_NAME_CHARS`` characters. Nothing here raises.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import aiohttp
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.payloads import User
from adapters.slack.sink import slack_error_code
from core.keys import USER_DATA_TTL, KeySpace, user_data_entry

log = structlog.get_logger("parley.slack.users")

NAME_TTL = 24 * 3600  # one users.info call per user per workspace per day
MISS_TTL = 3600  # Slack refused (user_not_found, missing_scope, ...): ask again in an hour
LOOKUP_TIMEOUT = 2.0  # seconds; past it the turn goes on without a name
MAX_NAME_CHARS = 80  # Slack's own limit for display names
_TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_KEEP_FORMAT = frozenset({"\u200d"})  # the zero-width joiner holds emoji sequences together


def clean_name(raw: str) -> str:
    """A user-chosen name made safe to put in a prompt: one line, no control or format characters."""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in raw
        if ch.isspace() or ch in _KEEP_FORMAT or not unicodedata.category(ch).startswith("C")
    )
    return " ".join(kept.split())[:MAX_NAME_CHARS].strip()


def display_name_of(user: User) -> str:
    """``profile.display_name``, else the real name, else the (legacy) username; "" when none is set."""
    profile = user.get("profile") or {}
    for candidate in (
        profile.get("display_name"),
        profile.get("real_name"),
        user.get("real_name"),
        user.get("name"),
    ):
        name = clean_name(candidate or "")
        if name:
            return name
    return ""


def is_user_id(value: str) -> bool:
    """A user id (``U…``; ``W…`` on Enterprise Grid), what ``users.info`` takes; not a bot id (``B…``)."""
    return bool(_USER_ID.fullmatch(value))


@dataclass
class _Flight:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class UserNames:
    """The display-name cache (Redis) in front of ``users.info``."""

    def __init__(self, redis: aioredis.Redis, keys: KeySpace, *, timeout: float = LOOKUP_TIMEOUT) -> None:
        self._r = redis
        self._keys = keys
        self._timeout = timeout
        self._flights: dict[str, _Flight] = {}  # one lookup at a time per key in this process
        self.calls = 0  # users.info calls made (logs, tests)

    def key(self, team: str, user: str) -> str:
        return self._keys.scoped("slack", "user_name", team or "-", user)

    async def lookup(self, client: AsyncWebClient, team: str, user: str) -> str:
        """``user``'s display name in ``team``, or "" (unknown, or it cannot be had right now)."""
        if not is_user_id(user):
            return ""
        key = self.key(team, user)
        async with self._one_at_a_time(key):
            try:
                cached = await self._r.get(key)
            except RedisError as exc:
                log.warning("slack_user_name_cache_unreadable", error=type(exc).__name__, user_id=user)
                return ""
            if cached is not None:
                return str(cached)
            name, ttl = await self._fetch(client, user)
            if ttl:
                try:
                    index = self._keys.user_data("slack", user)  # so that /forget finds the cached name
                    async with self._r.pipeline(transaction=False) as pipe:
                        pipe.set(key, name, ex=ttl)
                        pipe.sadd(index, user_data_entry(key))
                        pipe.expire(index, USER_DATA_TTL)
                        await pipe.execute()
                except RedisError as exc:
                    log.warning("slack_user_name_not_cached", error=type(exc).__name__, user_id=user)
            return name

    async def _fetch(self, client: AsyncWebClient, user: str) -> tuple[str, int]:
        """The name and how long to cache it (0: not at all)."""
        self.calls += 1
        try:
            async with asyncio.timeout(self._timeout):
                response = await client.users_info(user=user)
        except SlackApiError as exc:
            code = slack_error_code(exc)
            transient = code in _TRANSIENT or code.startswith("http_")
            log.info("slack_user_name_lookup_failed", error=code, user_id=user, cached=not transient)
            return "", 0 if transient else MISS_TTL
        except (SlackClientError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("slack_user_name_lookup_failed", error=type(exc).__name__, user_id=user, cached=False)
            return "", 0
        return display_name_of(cast(User, response.get("user") or {})), NAME_TTL

    @asynccontextmanager
    async def _one_at_a_time(self, key: str) -> AsyncIterator[None]:
        """Two messages of one user at once make one ``users.info`` call: the second waits for the cache."""
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
        flight.users += 1
        try:
            async with flight.lock:
                yield
        finally:
            flight.users -= 1
            if not flight.users:
                del self._flights[key]
