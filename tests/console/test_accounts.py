"""Console accounts over HTTP: sign-in by account, roles on every action, per-account audit, sign-in limits
that a guesser cannot turn against the operator (issue 20 item 8), trusted proxy headers, and the
``parley console user`` command."""

from __future__ import annotations

import asyncio
import io
import ipaddress

import aiohttp
import pytest
import redis.asyncio as aioredis

from bots import cli, console_cmd
from bots.loader import load_bot
from core.console.accounts import Accounts, Role
from core.console.limits import LoginLimiter, client_address, parse_networks
from core.errors import ConfigError
from core.keys import KeySpace
from tests.conftest import make_settings
from tests.console.conftest import ServeConsole, base_url, csrf_of, sign_in

AGENT_PW = "agent passphrase 123"
VIEWER_PW = "viewer passphrase 123"


async def _sign_in_as(session: aiohttp.ClientSession, base: str, account: str, password: str) -> int:
    async with session.get(f"{base}/login") as page:
        token = csrf_of(await page.text())
    async with session.post(
        f"{base}/login",
        data={"csrf": token, "account": account, "password": password},
        allow_redirects=False,
    ) as response:
        await response.read()
        return response.status


async def _accounts(redis: aioredis.Redis) -> None:
    accounts = Accounts(redis, KeySpace("support"))
    for name, role, password in (("ann", Role.AGENT, AGENT_PW), ("vic", Role.VIEWER, VIEWER_PW)):
        await accounts.add(name, role, await asyncio.to_thread(accounts.hash, password))


async def test_roles_decide_every_action_and_the_audit_names_the_account(
    serve_console: ServeConsole, redis_client: aioredis.Redis
) -> None:
    served = await serve_console(parley_console_login_attempts=5)
    base = base_url(served)
    await _accounts(redis_client)
    place = {"platform": "slack", "workspace": "T1", "channel": "C1", "thread": "1.2"}
    for account, password, allowed in (("ann", AGENT_PW, True), ("vic", VIEWER_PW, False)):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            assert await _sign_in_as(browser, base, account, password) == 303
            async with browser.get(f"{base}/overview") as page:
                html = await page.text()
                assert f"{account} (" in html
            csrf = csrf_of(html)
            for path, extra in (
                ("/handoffs/assign", {"assignee": "me"}),
                ("/handoffs/note", {"note": "a note"}),
                ("/moderation/block", {"user": "U9", "action": "block"}),
            ):
                async with browser.post(
                    f"{base}{path}", data={"csrf": csrf, **place, **extra}, allow_redirects=False
                ) as response:
                    assert (response.status == 303) is allowed, (account, path, response.status)
            async with browser.get(f"{base}/audit", allow_redirects=False) as page:
                assert page.status == 403  # admins only
    audit = [f for _, f in await redis_client.xrange(KeySpace("support").scoped("console", "audit"))]
    done = [(a["account"], a["action"]) for a in audit]
    assert ("ann", "assign") in done and ("ann", "note") in done and ("ann", "block") in done
    assert not any(account == "vic" and action != "sign_in" for account, action in done)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as admin:
        assert (await sign_in(admin, base)).status == 303  # the shared password: "operator", admin
        async with admin.get(f"{base}/audit") as page:
            html = await page.text()
            assert page.status == 200 and "ann" in html and "assign" in html


async def test_a_guesser_cannot_lock_the_operator_out(
    serve_console: ServeConsole, redis_client: aioredis.Redis
) -> None:
    """Fails on the old console: ten wrong guesses from anywhere behind the same address (an ingress, a
    port-forward) made the right password answer 429."""
    served = await serve_console(parley_console_login_attempts=3)
    base = base_url(served)
    await _accounts(redis_client)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as operator:
        assert await _sign_in_as(operator, base, "ann", AGENT_PW) == 303  # this browser is now known
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as guesser:
            statuses = [await _sign_in_as(guesser, base, "ann", f"guess {i}") for i in range(8)]
            assert statuses[:2] == [401, 401] and set(statuses[2:]) == {429}  # address, then account limit
            # Even the right password waits, from a browser the account has never used ...
            assert await _sign_in_as(guesser, base, "ann", AGENT_PW) == 429
        # ... but the operator's own browser signs in at once, from the same address.
        assert await _sign_in_as(operator, base, "ann", AGENT_PW) == 303
        # Removing the account ends its sessions at once.
        assert await Accounts(redis_client, KeySpace("support")).remove("ann")
        async with operator.get(f"{base}/overview", allow_redirects=False) as page:
            assert page.status == 303 and page.headers["Location"].endswith("/login")


async def test_the_wait_doubles_and_a_success_clears_it(redis_client: aioredis.Redis) -> None:
    limiter = LoginLimiter(redis_client, KeySpace("t"), attempts=2, base_seconds=1, cap_seconds=8)
    waits = []
    for _ in range(7):
        await limiter.failed("ann", "anon", now=1000.0)
        waits.append(await limiter.wait("ann", "anon", now=1000.0))
    assert waits == [0, 1, 2, 4, 8, 8, 8]  # no wait before the limit; doubling; capped
    assert await limiter.wait("ann", "device-x", now=1000.0) == 0  # another bucket
    await limiter.succeeded("ann", "anon")
    assert await limiter.wait("ann", "anon", now=1000.0) == 0


def test_forwarded_for_counts_only_behind_a_trusted_proxy() -> None:
    trusted = parse_networks(["10.0.0.0/8", "127.0.0.1"])
    assert client_address("203.0.113.9", "1.2.3.4", trusted) == "203.0.113.9"  # not a proxy: header ignored
    assert client_address("10.1.2.3", "198.51.100.7", trusted) == "198.51.100.7"
    # The client may forge addresses on the left; the nearest untrusted hop is the one the proxy saw.
    assert client_address("10.1.2.3", "6.6.6.6, 198.51.100.7, 10.9.9.9", trusted) == "198.51.100.7"
    assert client_address("127.0.0.1", "", trusted) == "127.0.0.1"
    assert client_address("10.1.2.3", "1.1.1.1", ()) == "10.1.2.3"  # nothing trusted: the peer
    assert isinstance(trusted[0], ipaddress.IPv4Network)


async def test_behind_a_trusted_proxy_each_client_has_its_own_address_limit(
    serve_console: ServeConsole,
) -> None:
    served = await serve_console(
        parley_console_login_attempts=2, parley_console_trusted_proxies=["127.0.0.1"]
    )
    base = base_url(served)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        async with client.get(f"{base}/login") as page:
            token = csrf_of(await page.text())

        async def attempt(account: str, forwarded: str) -> int:
            async with client.post(
                f"{base}/login",
                data={"csrf": token, "account": account, "password": "wrong password!"},
                headers={"X-Forwarded-For": forwarded},
                allow_redirects=False,
            ) as response:
                return response.status

        # One address walking through account names hits the address limit ...
        assert [await attempt(f"user{i}", "198.51.100.1") for i in range(4)] == [401, 401, 429, 429]
        # ... another client behind the same proxy does not share it.
        assert await attempt("someone", "198.51.100.2") == 401


async def test_user_add_list_remove(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``parley console user ...`` as parsed by the CLI (in-process, without the CLI's logging set-up)."""
    settings = make_settings(redis_url=redis_url)
    spec = load_bot("support")

    async def run(*argv: str, stdin: str = "") -> None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        args = cli._parser().parse_args(["console", *argv])
        await console_cmd.manage_users(args, settings, spec)

    await run(
        "user",
        "add",
        "Bob",
        "--role",
        "viewer",
        "--password-stdin",
        "--bot",
        "support",
        stdin="a fine long password\n",
    )
    assert "console account bob (viewer) saved" in capsys.readouterr().out
    for argv, stdin, error in (
        (("--bot", "support", "user", "add", "carl"), "short\n", "at least 12 characters"),
        (("--bot", "support", "user", "add", "operator"), "", "reserved"),
        (("user", "add", "bob", "--role", "boss", "--bot", "support"), "", "role 'boss'"),
        (("user", "add", "bob", "--bot", "support"), "another long password\n", "exists already"),
    ):
        with pytest.raises(ConfigError, match=error):
            await run(*argv, stdin=stdin)
    await run("user", "list", "--bot", "support")
    assert capsys.readouterr().out.strip() == "bob\tviewer"
    await run("user", "remove", "bob", "--bot", "support")
    with pytest.raises(ConfigError, match="no console account"):
        await run("user", "remove", "bob", "--bot", "support")
