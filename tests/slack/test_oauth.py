"""Multi-workspace: the OAuth install flow with Redis-backed stores, and uninstall / token revocation."""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from slack_sdk.oauth.installation_store.models.installation import Installation

from adapters.slack.oauth import InstallRateLimit, RedisInstallationStore, RedisOAuthStateStore
from adapters.slack.settings import Mode
from core.credentials import CredentialBox
from core.errors import ConfigError, CredentialError
from core.keys import KeySpace
from core.settings import Settings, load_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.slack.conftest import StartSlack

KEYS = KeySpace("support")


NEW_TOKEN = "xoxb-new"


def _installation(team: str = "T0NEW", user: str = "U0INST", token: str = NEW_TOKEN) -> Installation:
    return Installation(
        app_id="A0001",
        team_id=team,
        team_name="New Co",
        bot_token=token,
        bot_id="B0NEW",
        bot_user_id="U0NEWBOT",
        bot_scopes="chat:write,commands",
        user_id=user,
        installed_at=1_700_000_000.0,
    )


async def test_installation_store_round_trip(redis_client: aioredis.Redis) -> None:
    store = RedisInstallationStore(redis_client, KEYS, client_id="111.222")
    await store.async_save(_installation())

    bot = await store.async_find_bot(enterprise_id=None, team_id="T0NEW")
    assert bot is not None
    assert (bot.bot_token, bot.bot_user_id, bot.bot_scopes) == (
        "xoxb-new",
        "U0NEWBOT",
        ["chat:write", "commands"],
    )
    found = await store.async_find_installation(enterprise_id=None, team_id="T0NEW")
    assert found is not None
    assert found.user_id == "U0INST"
    assert found.bot_token == "xoxb-new"
    by_user = await store.async_find_installation(enterprise_id=None, team_id="T0NEW", user_id="U0INST")
    assert by_user is not None
    assert await store.async_find_bot(enterprise_id=None, team_id="T0OTHER") is None
    # Keys are namespaced per bot and per app (client id).
    assert await redis_client.keys("parley:support:slack:install:111.222:*")


async def test_revoked_bot_token_is_not_handed_out(redis_client: aioredis.Redis) -> None:
    store = RedisInstallationStore(redis_client, KEYS)
    await store.async_save(_installation())
    await store.async_delete_bot(enterprise_id=None, team_id="T0NEW")
    assert await store.async_find_bot(enterprise_id=None, team_id="T0NEW") is None
    found = await store.async_find_installation(enterprise_id=None, team_id="T0NEW")
    assert found is not None
    assert found.bot_token is None

    await store.async_delete_all(enterprise_id=None, team_id="T0NEW")
    assert await store.async_find_installation(enterprise_id=None, team_id="T0NEW") is None


async def test_state_is_consumed_once(redis_client: aioredis.Redis) -> None:
    states = RedisOAuthStateStore(redis_client, KEYS, expiration_seconds=60)
    state = await states.async_issue()
    assert await redis_client.ttl(f"parley:support:slack:oauth_state:{state}") > 0
    assert await states.async_consume(state) is True
    assert await states.async_consume(state) is False
    assert await states.async_consume("never-issued") is False


async def test_install_flow_then_answer_in_the_new_workspace(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack(
        slack_bot_token=None, slack_client_id=slack.client_id, slack_client_secret=slack.client_secret
    )
    assert app.adapter.mode is Mode.OAUTH
    slack.add_oauth_code("code-123", "T0NEW", "xoxb-new-workspace", bot_user_id="U0NEWBOT")

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{app.url}/slack/install") as resp:
            assert resp.status == 200
            page = await resp.text()
            cookie = resp.headers["Set-Cookie"].split(";")[0]
        authorize = re.search(r'href="(https://slack.com/oauth/v2/authorize[^"]+)"', page)
        assert authorize is not None
        query = parse_qs(urlsplit(authorize.group(1).replace("&amp;", "&")).query)
        assert "app_mentions:read" in query["scope"][0]
        state = query["state"][0]

        # A forged state is refused, and the real one still works after that.
        async with http.get(
            f"{app.url}/slack/oauth_redirect", params={"code": "code-123", "state": "forged"}
        ) as resp:
            assert resp.status == 400
        async with http.get(
            f"{app.url}/slack/oauth_redirect",
            params={"code": "code-123", "state": state},
            headers={"Cookie": cookie},
        ) as resp:
            assert resp.status == 200, await resp.text()

    store = app.adapter.installations
    assert store is not None
    bot = await store.async_find_bot(enterprise_id=None, team_id="T0NEW")
    assert bot is not None
    assert bot.bot_token == "xoxb-new-workspace"

    # An event from the new workspace is answered with that workspace's token.
    await app.sender.event(
        rq.app_mention("hi from new", team="T0NEW", bot_user="U0NEWBOT", ts="1700000300.000100")
    )
    await app.settle()
    (msg,) = slack.bot_messages("C0GENERAL")
    assert msg.shown == "You said: hi from new"
    assert {c.token for c in slack.calls_to("chat.startStream", "chat.stopStream")} == {"xoxb-new-workspace"}

    # Uninstalling removes the workspace; its events are no longer served.
    uninstall = rq.event_callback({"type": "app_uninstalled", "event_ts": rq.new_ts()}, team="T0NEW")
    assert (await app.sender.event(uninstall)).status == 200
    await app.settle()
    assert await store.async_find_installation(enterprise_id=None, team_id="T0NEW") is None
    await app.sender.event(rq.app_mention("anyone?", team="T0NEW", bot_user="U0NEWBOT"))
    await app.settle()
    assert len(fake_openai.chat_requests) == 1


async def test_tokens_revoked_event_drops_the_bot_token(start_slack: StartSlack, slack: FakeSlack) -> None:
    app = await start_slack(
        slack_bot_token=None, slack_client_id=slack.client_id, slack_client_secret=slack.client_secret
    )
    store = app.adapter.installations
    assert store is not None
    await store.async_save(_installation(team="T0001", token=slack.bot_token))
    revoked = rq.event_callback(
        {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["U0NEWBOT"]}, "event_ts": rq.new_ts()}
    )
    assert (await app.sender.event(revoked)).status == 200
    await app.settle()
    assert await store.async_find_bot(enterprise_id=None, team_id="T0001") is None


def _box(*keys: bytes) -> CredentialBox:
    return CredentialBox([Fernet(k) for k in keys])


async def test_installation_records_are_encrypted_and_keys_rotate(redis_client: aioredis.Redis) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    store = RedisInstallationStore(redis_client, KEYS, client_id="1.2", box=_box(old))
    await store.async_save(_installation())
    key = store.key(None, "T0NEW", False)
    raw = await redis_client.hgetall(key)
    assert set(raw) == {"bot", "installer", "installer:U0INST"}
    assert all(v.startswith("enc1:") and NEW_TOKEN not in v for v in raw.values())  # no token in clear

    # Rotation, step 1: the new key first, the old one still listed: everything still opens.
    rotated = RedisInstallationStore(redis_client, KEYS, client_id="1.2", box=_box(new, old))
    bot = await rotated.async_find_bot(enterprise_id=None, team_id="T0NEW")
    assert bot is not None and bot.bot_token == NEW_TOKEN
    # Step 2: re-seal under the new key; step 3: the old key can go.
    assert await rotated.reseal_all() == 3
    assert await rotated.reseal_all() == 0
    only_new = RedisInstallationStore(redis_client, KEYS, client_id="1.2", box=_box(new))
    found = await only_new.async_find_installation(enterprise_id=None, team_id="T0NEW", user_id="U0INST")
    assert found is not None and found.bot_token == NEW_TOKEN
    # A record sealed with a key no longer configured is an error naming the variable, not a crash elsewhere.
    only_old = RedisInstallationStore(redis_client, KEYS, client_id="1.2", box=_box(old))
    with pytest.raises(CredentialError, match="PARLEY_CREDENTIALS_KEYS"):
        await only_old.async_find_bot(enterprise_id=None, team_id="T0NEW")


async def test_records_stored_in_clear_are_read_then_sealed_by_rotation(redis_client: aioredis.Redis) -> None:
    clear = RedisInstallationStore(redis_client, KEYS, client_id="3.4")  # before keys were configured
    await clear.async_save(_installation())
    sealed = RedisInstallationStore(redis_client, KEYS, client_id="3.4", box=_box(Fernet.generate_key()))
    bot = await sealed.async_find_bot(enterprise_id=None, team_id="T0NEW")
    assert bot is not None and bot.bot_token == NEW_TOKEN
    assert await sealed.reseal_all() == 3
    raw = await redis_client.hgetall(sealed.key(None, "T0NEW", False))
    assert all(v.startswith("enc1:") for v in raw.values())


def test_bad_credential_keys_name_the_variable_and_production_needs_them() -> None:
    with pytest.raises(ConfigError, match=r"PARLEY_CREDENTIALS_KEYS: .*key #2 is not a Fernet key") as err:
        load_settings(_env_file=None, parley_credentials_keys=f"{Fernet.generate_key().decode()},not-a-key")
    assert "not-a-key" not in str(err.value)
    production = Settings(_env_file=None, parley_env="production")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="PARLEY_CREDENTIALS_KEYS is not set"):
        production.credential_box()


def _org_installation() -> Installation:
    return Installation(
        app_id="A0001",
        enterprise_id="E0GRID",
        team_id="T0INGRID",
        is_enterprise_install=True,
        bot_token="xoxb-org",
        bot_id="B0ORG",
        bot_user_id="U0ORGBOT",
        user_id="U0ADMIN",
        installed_at=1_700_000_000.0,
    )


async def test_enterprise_uninstall_removes_the_org_wide_installation(redis_client: aioredis.Redis) -> None:
    store = RedisInstallationStore(redis_client, KEYS, client_id="5.6")
    await store.async_save(_org_installation())

    async def org_bot() -> str | None:
        bot = await store.async_find_bot(enterprise_id="E0GRID", team_id=None, is_enterprise_install=True)
        return bot.bot_token if bot else None

    assert await org_bot() == "xoxb-org"
    # tokens_revoked and app_uninstalled arrive with the enterprise and a team (bolt's context)
    await store.async_delete_bot(enterprise_id="E0GRID", team_id="T0INGRID")
    assert await org_bot() is None
    await store.async_delete_all(enterprise_id="E0GRID", team_id="T0INGRID")
    assert await redis_client.keys("parley:support:slack:install:5.6:*") == []


async def test_the_install_page_is_rate_limited(start_slack: StartSlack, slack: FakeSlack) -> None:
    app = await start_slack(
        slack_bot_token=None, slack_client_id=slack.client_id, slack_client_secret=slack.client_secret
    )
    limit = app.adapter.install_limit.per_client
    if time.time() % 60 > 55:  # the windows are calendar minutes: do not straddle one
        await asyncio.sleep(60.5 - time.time() % 60)
    statuses = []
    async with aiohttp.ClientSession() as http:
        for _ in range(limit + 5):
            async with http.get(f"{app.url}/slack/install") as resp:
                statuses.append(resp.status)
    assert statuses == [200] * limit + [429] * 5
    states = await app.runtime.redis.keys("parley:support:slack:oauth_state:*")
    assert len(states) == limit  # a refused request writes no state


async def test_install_rate_limit_counts_per_client_and_in_total(redis_client: aioredis.Redis) -> None:
    limit = InstallRateLimit(redis_client, KEYS, per_client=2, per_minute=3)
    at = 1_800_000_000.0
    assert [await limit.allow("1.1.1.1", at) for _ in range(3)] == [True, True, False]
    assert await limit.allow("2.2.2.2", at) is False  # 4 in this minute: over the total
    assert await limit.allow("2.2.2.2", at + 60) is True  # the next minute
