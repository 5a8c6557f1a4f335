"""Redis-backed async OAuth stores for bolt: installations (per workspace) and one-time install states.

slack_sdk ships file, SQLite, SQLAlchemy and S3 stores, none for Redis, and the async wrappers of the
file/SQLite ones block the event loop. These are async all the way down and need nothing but the Redis the
bot already uses, so every replica sees every installation.

One hash per workspace (``…:slack:install:<enterprise>:<team>``) holds the bot record (``bot``), the latest
installation (``installer``) and each installing user's (``installer:<user>``), as JSON sealed with the
credential keys (core/credentials.py: the records hold bot and user tokens). Revoking the bot token also
strips it from the installation records, so ``authorize`` stops handing it out. An org-wide (Enterprise Grid)
installation lives under ``<enterprise>:-``: uninstalls and revocations act on that record too, not only on
the workspace's, so no token stays behind.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from core.credentials import CredentialBox
from core.errors import StoreError
from core.keys import KeySpace

_logger = logging.getLogger("parley.slack.oauth")
_NONE = "-"
_BOT_FIELDS = (
    "bot_token",
    "bot_refresh_token",
    "bot_token_expires_at",
    "bot_id",
    "bot_user_id",
    "bot_scopes",
)


class RedisInstallationStore(AsyncInstallationStore):
    def __init__(
        self, redis: aioredis.Redis, keys: KeySpace, *, client_id: str = "", box: CredentialBox | None = None
    ) -> None:
        self._r = redis
        self._keys = keys
        self._client_id = client_id or _NONE
        self._box = box or CredentialBox(())

    def _seal(self, record: dict[str, Any]) -> str:
        return self._box.seal(json.dumps(record))

    def _open(self, raw: str) -> dict[str, Any]:
        data = json.loads(self._box.open(raw))
        if not isinstance(data, dict):
            raise StoreError("Slack installation store: a record is not a JSON object")
        return data

    def _keys_for(self, enterprise_id: str | None, team_id: str | None) -> list[str]:
        """The records an uninstall or a revocation reaches: the workspace's and, in an Enterprise Grid, the
        org-wide installation's (bolt names the team even for an org-wide install)."""
        keys = [self.key(enterprise_id, team_id, False)]
        if enterprise_id:
            keys.append(self.key(enterprise_id, None, True))
        return list(dict.fromkeys(keys))

    @property
    def logger(self) -> logging.Logger:
        return _logger

    def key(self, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None) -> str:
        team = _NONE if is_enterprise_install else (team_id or _NONE)
        return self._keys.scoped("slack", "install", self._client_id, enterprise_id or _NONE, team)

    # ------------------------------------------------------------------ writes

    async def async_save(self, installation: Installation) -> None:
        key = self.key(installation.enterprise_id, installation.team_id, installation.is_enterprise_install)
        entity = self._seal(installation.__dict__)
        fields: dict[FieldT, EncodableT] = {
            "installer": entity,
            f"installer:{installation.user_id or _NONE}": entity,
        }
        if installation.bot_token:
            fields["bot"] = self._seal(installation.to_bot().__dict__)
        await self._call(self._r.hset(key, mapping=fields))

    async def async_save_bot(self, bot: Bot) -> None:
        if not bot.bot_token:
            return
        key = self.key(bot.enterprise_id, bot.team_id, bot.is_enterprise_install)
        await self._call(self._r.hset(key, "bot", self._seal(bot.__dict__)))

    # ------------------------------------------------------------------ reads

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        raw = await self._call(self._r.hget(self.key(enterprise_id, team_id, is_enterprise_install), "bot"))
        return Bot(**self._open(raw)) if raw else None

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        key = self.key(enterprise_id, team_id, is_enterprise_install)
        field = f"installer:{user_id}" if user_id else "installer"
        raw = await self._call(self._r.hget(key, field))
        if not raw:
            return None
        installation = Installation(**self._open(raw))
        if user_id is not None:
            # The latest bot token wins over the one stored with an older per-user installation.
            latest = await self._call(self._r.hget(key, "installer"))
            if latest:
                current = self._open(latest)
                for name in _BOT_FIELDS:
                    setattr(installation, name, current.get(name))
        return installation

    # ------------------------------------------------------------------ deletes (uninstall, revocation)

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        for key in self._keys_for(enterprise_id, team_id):
            stored: dict[str, str] = await self._call(self._r.hgetall(key))
            updates: dict[FieldT, EncodableT] = {}
            for name, raw in stored.items():
                if name.startswith("installer"):
                    data = self._open(raw)
                    for bot_field in _BOT_FIELDS:
                        data[bot_field] = None
                    updates[name] = self._seal(data)
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hdel(key, "bot")
                if updates:
                    pipe.hset(key, mapping=updates)
                await self._call(pipe.execute())

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        for key in self._keys_for(enterprise_id, team_id):
            stored: dict[str, str] = await self._call(self._r.hgetall(key))
            doomed = [
                name
                for name, raw in stored.items()
                if name.startswith("installer")
                and (
                    user_id is None
                    or name == f"installer:{user_id}"
                    or self._open(raw).get("user_id") == user_id
                )
            ]
            if doomed:
                await self._call(self._r.hdel(key, *doomed))

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self._call(self._r.delete(*self._keys_for(enterprise_id, team_id)))

    # ------------------------------------------------------------------ key rotation

    async def reseal_all(self) -> int:
        """Re-seal every stored record under the newest credential key (and any stored in clear); returns
        how many fields were rewritten. Run after putting a new key first in PARLEY_CREDENTIALS_KEYS."""
        rewritten = 0
        pattern = self._keys.scoped("slack", "install", "*")
        async for key in self._r.scan_iter(match=pattern, count=500):
            stored: dict[str, str] = await self._call(self._r.hgetall(key))
            updates = {name: self._box.reseal(raw) for name, raw in stored.items() if self._box.stale(raw)}
            if updates:
                await self._call(self._r.hset(key, mapping=updates))  # type: ignore[arg-type]
                rewritten += len(updates)
        return rewritten

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        try:
            return await awaitable
        except RedisError as exc:
            raise StoreError(f"Slack installation store: {type(exc).__name__}: {exc}") from exc


class InstallRateLimit:
    """``GET /slack/install`` issues a one-time state (a Redis key) per request: at most ``per_client`` a
    minute from one address and ``per_minute`` in all (fixed one-minute windows, one round trip), so a
    flood cannot fill Redis. Behind a proxy every request comes from the proxy: the total still holds, and
    the proxy should limit per client (deploy/README.md, "The HTTP edge")."""

    def __init__(
        self, redis: aioredis.Redis, keys: KeySpace, *, per_client: int = 10, per_minute: int = 120
    ) -> None:
        self._r = redis
        self._keys = keys
        self.per_client = per_client
        self.per_minute = per_minute

    async def allow(self, client: str, now: float | None = None) -> bool:
        minute = int((time.time() if now is None else now) // 60)
        mine = self._keys.scoped("slack", "install_rate", client or "-", str(minute))
        everyone = self._keys.scoped("slack", "install_rate", "*all*", str(minute))
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.incr(mine)
                pipe.expire(mine, 120)
                pipe.incr(everyone)
                pipe.expire(everyone, 120)
                counts: list[Any] = await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"Slack install rate limit: {type(exc).__name__}") from exc
        return int(counts[0]) <= self.per_client and int(counts[2]) <= self.per_minute


class RedisOAuthStateStore(AsyncOAuthStateStore):
    """One-time ``state`` values for the install flow: issued with a TTL, consumed at most once."""

    def __init__(self, redis: aioredis.Redis, keys: KeySpace, *, expiration_seconds: int = 600) -> None:
        self._r = redis
        self._keys = keys
        self._ttl = expiration_seconds

    @property
    def logger(self) -> logging.Logger:
        return _logger

    def _key(self, state: str) -> str:
        return self._keys.scoped("slack", "oauth_state", state)

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        state = secrets.token_urlsafe(24)
        try:
            await self._r.set(self._key(state), "1", ex=self._ttl, nx=True)
        except RedisError as exc:
            raise StoreError(f"Slack OAuth state store: {type(exc).__name__}") from exc
        return state

    async def async_consume(self, state: str) -> bool:
        if not state or len(state) > 200:
            return False
        try:
            deleted = await self._r.delete(self._key(state))  # DEL is atomic: only one caller gets 1
        except RedisError as exc:
            raise StoreError(f"Slack OAuth state store: {type(exc).__name__}") from exc
        return bool(deleted)
