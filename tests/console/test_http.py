"""The console over HTTP (real aiohttp server, real Redis): sign-in, sessions, CSRF, limits, headers,
pages and actions."""

from __future__ import annotations

import aiohttp
import pytest

from core.console.mount import mount_console
from core.types import Author, Place, ReplyKind, ReplyResult, Turn
from tests.conftest import RuntimeFactory
from tests.console.conftest import (
    PASSWORD,
    RUNTIME,
    ServeConsole,
    base_url,
    console_settings,
    csrf_of,
    sign_in,
)

PAGES = ("overview", "conversations", "handoffs", "moderation", "knowledge", "settings")


async def test_off_without_a_password(runtime_factory: RuntimeFactory) -> None:
    app = {"console": console_settings(parley_console_password=None)}
    async with runtime_factory("support", app=app, **RUNTIME) as rt:
        assert await mount_console(rt) is None
        await rt.ops.http.start()
        try:
            port = rt.ops.http.bound["ops"]  # where the console would be: beside /healthz
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/console/login") as r:
                assert r.status == 404
        finally:
            await rt.ops.http.aclose()


async def test_refused_without_a_session(serve_console: ServeConsole, client: aiohttp.ClientSession) -> None:
    base = base_url(await serve_console())
    for page in PAGES:
        async with client.get(f"{base}/{page}", allow_redirects=False) as r:
            assert r.status == 303, page
            assert r.headers["Location"] == "/console/login"
            assert r.headers["X-Frame-Options"] == "DENY"
    async with client.post(f"{base}/handoffs/resume", data={"platform": "slack", "channel": "C1"}) as r:
        assert r.status == 403
    async with client.get(
        f"{base}/overview", cookies={"parley_console": "forged"}, allow_redirects=False
    ) as r:
        assert r.status == 303


async def test_sign_in_cookie_and_headers(serve_console: ServeConsole, client: aiohttp.ClientSession) -> None:
    base = base_url(await serve_console())
    wrong = await sign_in(client, base, "not the password")
    assert wrong.status == 401
    response = await sign_in(client, base)
    assert response.status == 303 and response.headers["Location"] == "/console/overview"
    cookie = next(v for v in response.headers.getall("Set-Cookie") if v.startswith("parley_console="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here; behind HTTPS (X-Forwarded-Proto) it is Secure
    for page in PAGES:
        async with client.get(f"{base}/{page}") as r:
            assert r.status == 200, page
            csp = r.headers["Content-Security-Policy"]
            assert (
                "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
            )
            assert r.headers["Cache-Control"] == "no-store"
            html = await r.text()
            assert "<script>" not in html  # no inline script anywhere
    async with client.get(f"{base}/static/vendor/chart.umd.min.js") as r:
        assert r.status == 200 and r.content_type == "text/javascript"
        assert b"Chart.js v4.5.1" in await r.read()


async def test_secure_cookie_behind_https(serve_console: ServeConsole) -> None:
    base = base_url(await serve_console())
    https = {"X-Forwarded-Proto": "https"}
    # A client that keeps no cookies: the test carries the login cookie by hand (a jar would not send a
    # Secure cookie over the plain HTTP of this loopback test).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        async with client.get(f"{base}/login", headers=https) as page:
            token = csrf_of(await page.text())
            login_cookie = page.headers["Set-Cookie"]
            assert "Secure" in login_cookie and "HttpOnly" in login_cookie
            value = page.cookies["parley_console_login"].value
        async with client.post(
            f"{base}/login",
            data={"csrf": token, "password": PASSWORD},
            headers={**https, "Cookie": f"parley_console_login={value}"},
            allow_redirects=False,
        ) as r:
            assert r.status == 303
            cookie = next(v for v in r.headers.getall("Set-Cookie") if v.startswith("parley_console="))
            assert "Secure" in cookie and "SameSite=Strict" in cookie


async def test_csrf_less_posts_are_rejected(
    serve_console: ServeConsole, client: aiohttp.ClientSession
) -> None:
    served = await serve_console()
    base = base_url(served)
    # The login form itself needs its token.
    async with client.post(f"{base}/login", data={"password": PASSWORD}, allow_redirects=False) as r:
        assert r.status == 403
    assert (await sign_in(client, base)).status == 303
    place = Place("slack", "T1", "C1", "1.2")
    await served.runtime.engine.memory.set_meta(place, {"paused": "handoff"})
    form = {"platform": "slack", "workspace": "T1", "channel": "C1", "thread": "1.2"}
    async with client.post(f"{base}/handoffs/resume", data=form, allow_redirects=False) as r:
        assert r.status == 403
        assert "CSRF" in await r.text()
    async with client.post(
        f"{base}/handoffs/resume", data={**form, "csrf": "guess"}, allow_redirects=False
    ) as r:
        assert r.status == 403
    assert (await served.runtime.redis.hgetall(served.runtime.keys.meta(place))).get(
        "paused"
    ) == "handoff"  # untouched
    async with client.get(f"{base}/handoffs") as page:
        token = csrf_of(await page.text())
    async with client.post(
        f"{base}/handoffs/resume", data={**form, "csrf": token}, allow_redirects=False
    ) as r:
        assert r.status == 303
    assert "paused" not in await served.runtime.redis.hgetall(served.runtime.keys.meta(place))


async def test_login_attempts_are_limited(serve_console: ServeConsole, client: aiohttp.ClientSession) -> None:
    base = base_url(await serve_console(parley_console_login_attempts=3))
    statuses = [(await sign_in(client, base, "wrong password!")).status for _ in range(3)]
    assert statuses == [401, 401, 401]
    assert (await sign_in(client, base)).status == 429  # even the right password, until the window ends


async def test_sign_out_ends_the_session(serve_console: ServeConsole, client: aiohttp.ClientSession) -> None:
    base = base_url(await serve_console())
    await sign_in(client, base)
    async with client.get(f"{base}/overview") as page:
        token = csrf_of(await page.text())
    stolen = {c.key: c.value for c in client.cookie_jar}["parley_console"]
    async with client.post(f"{base}/logout", data={"csrf": token}, allow_redirects=False) as r:
        assert r.status == 303
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other,
        other.get(f"{base}/overview", cookies={"parley_console": stolen}, allow_redirects=False) as r,
    ):
        assert r.status == 303  # the old cookie no longer opens anything


async def test_settings_mask_secrets(serve_console: ServeConsole, client: aiohttp.ClientSession) -> None:
    served = await serve_console()
    await sign_in(client, base_url(served))
    async with client.get(f"{base_url(served)}/settings") as r:
        html = await r.text()
    assert "test-key" not in html  # OPENAI_API_KEY
    assert PASSWORD not in html
    assert served.runtime.settings.redis_url is not None
    assert served.runtime.settings.redis_url.get_secret_value() not in html
    assert "openai_api_key" in html and "********" in html
    assert "fake-model" in html  # what is not secret is shown


async def test_block_and_unblock_are_audited(
    serve_console: ServeConsole, client: aiohttp.ClientSession
) -> None:
    served = await serve_console()
    rt = served.runtime
    base = base_url(served)
    await sign_in(client, base)
    # A conversation in the workspace, so the page lists the workspace's blocked users.
    await served.stats.record(
        Turn(author=Author(id="U5"), place=Place("slack", "T1", "C1"), text="x"),
        ReplyResult("t", ReplyKind.ANSWER, "y"),
        1.0,
    )
    async with client.get(f"{base}/moderation") as page:
        token = csrf_of(await page.text())
    form = {"csrf": token, "platform": "slack", "workspace": "T1", "user": "U666", "action": "block"}
    async with client.post(f"{base}/moderation/block", data=form) as r:
        assert r.status == 200
        html = await r.text()
    assert await rt.redis.sismember(rt.keys.scoped("safety", "blocked", "slack", "T1"), "U666")
    assert "<code>U666</code>" in html
    async with client.post(f"{base}/moderation/block", data={**form, "action": "unblock"}) as r:
        assert r.status == 200
    assert not await rt.redis.sismember(rt.keys.scoped("safety", "blocked", "slack", "T1"), "U666")
    assert rt.safety is not None
    events = await rt.redis.xrange(rt.safety.events.stream)
    actions = [(f["stage"], f["category"], f["action"], f["source"], f["user"]) for _, f in events]
    assert actions == [
        ("admin", "block", "block", "console", "U666"),
        ("admin", "block", "unblock", "console", "U666"),
    ]
    async with client.get(f"{base}/moderation", params={"action": "unblock"}) as r:
        filtered = await r.text()
    assert filtered.count("<td>console</td>") == 1 and "<td>unblock</td>" in filtered


@pytest.mark.parametrize("path", ["/conversation", "/conversation?platform=slack"])
async def test_bad_conversation_link(
    serve_console: ServeConsole, client: aiohttp.ClientSession, path: str
) -> None:
    base = base_url(await serve_console())
    await sign_in(client, base)
    async with client.get(base + path) as r:
        assert r.status == 400


async def test_a_port_of_its_own(serve_console: ServeConsole, client: aiohttp.ClientSession) -> None:
    served = await serve_console(parley_console_port=0)
    http = served.runtime.ops.http
    alone, ops = http.bound["/console"], http.bound["ops"]
    assert alone != ops
    async with client.get(f"http://127.0.0.1:{ops}/console/login") as r:
        assert r.status == 404  # not beside the ops endpoints
    assert (await sign_in(client, f"http://127.0.0.1:{alone}/console")).status == 303


async def test_conversations_search_transcript_feedback_and_decisions(
    serve_console: ServeConsole, client: aiohttp.ClientSession
) -> None:
    from adapters.slack.state import SlackState
    from adapters.slack.translate import Feedback
    from core.safety.events import Decision
    from tests.core.helpers import make_turn

    served = await serve_console()
    rt = served.runtime
    base = base_url(served)
    slack_turn = make_turn(
        "my order is late", user="U1", platform="slack", workspace="T1", channel="C1", thread="1.1"
    )
    discord_turn = make_turn(
        "hello there", user="U2", platform="discord", workspace="G1", channel="C9", thread=""
    )
    for turn in (slack_turn, discord_turn):
        assert (await rt.engine.collect(turn)).kind is ReplyKind.ANSWER
    vote = Feedback(
        turn_id=slack_turn.turn_id, vote="down", user_id="U1", place=slack_turn.place, message_ts="1.2"
    )
    state = SlackState(rt.redis, rt.keys, thread_ttl=60, count_vote=rt.stats.queue_vote if rt.stats else None)
    assert await state.record_feedback(vote)
    await rt.safety.events.record(slack_turn, [Decision("input", "pii", "redact", "rules", "email")])
    await sign_in(client, base)

    async def listing(**query: str) -> str:
        async with client.get(f"{base}/conversations", params=query) as r:
            assert r.status == 200
            return await r.text()

    everything = await listing()
    assert "<td>C1</td>" in everything and "<td>C9</td>" in everything
    by_user = await listing(user="U1")
    assert "<td>C1</td>" in by_user and "<td>C9</td>" not in by_user
    by_platform = await listing(platform="discord")
    assert "<td>C9</td>" in by_platform and "<td>C1</td>" not in by_platform
    assert "No conversations match." in await listing(user="nobody")

    place = slack_turn.place
    query = {
        "platform": place.platform,
        "workspace": place.workspace,
        "channel": place.channel,
        "thread": place.thread,
    }
    async with client.get(f"{base}/conversation", params=query) as r:
        transcript = await r.text()
    assert "my order is late" in transcript
    assert "0 thumbs up, 1 thumbs down" in transcript
    assert "moderation: input pii → redact (rules)" in transcript
    async with client.get(f"{base}/overview") as r:
        overview = await r.text()
    assert "(0 up / 1 down)" in overview  # the Slack vote reached the daily aggregates
