"""Redis-backed async OAuth stores for bolt: installations (per workspace) and one-time install states.

slack_sdk ships file, SQLite, SQLAlchemy and S3 stores, none for Redis, and the async wrappers of the
file/SQLite ones block the event loop. These are async all the way down and need nothing but the Redis the
bot already uses, so every replica sees every installation.

One hash per workspace (``…:slack:install:<enterprise>:<team>``) holds the bot record (``bot``), the latest
installation (``installer``) and each installing user's (``installer:<user>``), as JSON. Revoking the bot
token also strips it from the installation records, so ``authorize`` stops handing it out.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

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
    def __init__(self, redis: aioredis.Redis, keys: KeySpace, *, client_id: str = "") -> None:
        self._r = redis
        self._keys = keys
        self._client_id = client_id or _NONE

    @property
    def logger(self) -> logging.Logger:
        return _logger

    def key(self, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None) -> str:
        team = _NONE if is_enterprise_install else (team_id or _NONE)
        return self._keys.scoped("slack", "install", self._client_id, enterprise_id or _NONE, team)

    # ------------------------------------------------------------------ writes

    async def async_save(self, installation: Installation) -> None:
        key = self.key(installation.enterprise_id, installation.team_id, installation.is_enterprise_install)
        entity = json.dumps(installation.__dict__)
        fields: dict[FieldT, EncodableT] = {
            "installer": entity,
            f"installer:{installation.user_id or _NONE}": entity,
        }
        if installation.bot_token:
            fields["bot"] = json.dumps(installation.to_bot().__dict__)
        await self._call(self._r.hset(key, mapping=fields))

    async def async_save_bot(self, bot: Bot) -> None:
        if not bot.bot_token:
            return
        key = self.key(bot.enterprise_id, bot.team_id, bot.is_enterprise_install)
        await self._call(self._r.hset(key, "bot", json.dumps(bot.__dict__)))

    # ------------------------------------------------------------------ reads

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        raw = await self._call(self._r.hget(self.key(enterprise_id, team_id, is_enterprise_install), "bot"))
        return Bot(**json.loads(raw)) if raw else None

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
        installation = Installation(**json.loads(raw))
        if user_id is not None:
            # The latest bot token wins over the one stored with an older per-user installation.
            latest = await self._call(self._r.hget(key, "installer"))
            if latest:
                current = json.loads(latest)
                for name in _BOT_FIELDS:
                    setattr(installation, name, current.get(name))
        return installation

    # ------------------------------------------------------------------ deletes (uninstall, revocation)

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        key = self.key(enterprise_id, team_id, False)
        stored: dict[str, str] = await self._call(self._r.hgetall(key))
        updates: dict[FieldT, EncodableT] = {}
        for name, raw in stored.items():
            if name.startswith("installer"):
                data = json.loads(raw)
                for bot_field in _BOT_FIELDS:
                    data[bot_field] = None
                updates[name] = json.dumps(data)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hdel(key, "bot")
            if updates:
                pipe.hset(key, mapping=updates)
            await self._call(pipe.execute())

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        key = self.key(enterprise_id, team_id, False)
        stored: dict[str, str] = await self._call(self._r.hgetall(key))
        doomed = [
            name
            for name, raw in stored.items()
            if name.startswith("installer")
            and (
                user_id is None or name == f"installer:{user_id}" or json.loads(raw).get("user_id") == user_id
            )
        ]
        if doomed:
            await self._call(self._r.hdel(key, *doomed))

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self._call(self._r.delete(self.key(enterprise_id, team_id, False)))

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        try:
            return await awaitable
        except RedisError as exc:
            raise StoreError(f"Slack installation store: {type(exc).__name__}: {exc}") from exc


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
