"""The support desk's parts that need no browser: the Outbox port on both platforms, replying without a
platform connection, the unanswered list (thumbs down, grouping, CSV) and bad input."""

from __future__ import annotations

import csv
import io

import aiohttp
import pytest
import redis.asyncio as aioredis

import adapters.slack as slack_platform
from adapters.common.deps import EdgeDeps
from adapters.discord.delivery import DiscordDelivery
from bots.loader import load_bot
from core.console.outbox import Outbox
from core.console.stats import queue_unanswered, queue_vote
from core.console.unanswered import Question, group_lexical
from core.keys import KeySpace
from core.memory import NewMessage
from core.types import Place
from tests.conftest import RuntimeFactory
from tests.console.conftest import ServeConsole, base_url, csrf_of, sign_in
from tests.discord.conftest import assert_mention_safe, discord_settings
from tests.fakes.discord import FakeDiscord

KEYS = KeySpace("support")


async def test_discord_delivery_is_an_outbox(
    runtime_factory: RuntimeFactory, fake_discord: FakeDiscord
) -> None:
    async with runtime_factory("arcade") as rt:
        delivery = DiscordDelivery(EdgeDeps.of(rt), discord_settings(fake_discord))
        try:
            assert isinstance(delivery, Outbox)
            place = Place("discord", fake_discord.guild_id, fake_discord.general["id"])
            posted = await delivery.post(place, "Hello @everyone, **alice** here\n\n— alice (support team)")
        finally:
            await delivery.aclose()
    (call,) = fake_discord.calls_to("POST", rf"/channels/{fake_discord.general['id']}/messages")
    assert posted and "alice (support team)" in call.json["content"]
    assert_mention_safe(fake_discord)


async def _write_turn(client: aioredis.Redis, place: Place, turn: str, question: str, answer: str) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for seq, (role, text) in enumerate((("user", question), ("assistant", answer)), 1):
            message = NewMessage(role, text, 5, "U1", "Dana", turn_id=turn)
            pipe.rpush(KEYS.messages(place), f"{seq}|{message.encode()}")
        await pipe.execute()


async def test_unanswered_groups_thumbs_down_and_not_covered_and_exports_safe_csv(
    serve_console: ServeConsole, redis_client: aioredis.Redis
) -> None:
    served = await serve_console()
    base = base_url(served)
    a, b, c = (Place("slack", "T1", "C1", t) for t in ("1.1", "2.2", "3.3"))
    await _write_turn(redis_client, a, "ta", "How do I return a broken kettle?", "Like this.")
    await _write_turn(redis_client, b, "tb", "how do I return my broken kettle", "I don't know.")
    await _write_turn(redis_client, c, "tc", '=HYPERLINK("http://x") saddles?', "Not covered.")
    async with redis_client.pipeline(transaction=False) as pipe:
        queue_vote(pipe, KEYS, a, "down", turn_id="ta")
        queue_unanswered(pipe, KEYS, "not_covered", "tb", b, 1.0)
        queue_unanswered(pipe, KEYS, "not_covered", "tc", c, 2.0)
        await pipe.execute()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        assert (await sign_in(client, base)).status == 303
        async with client.get(f"{base}/unanswered") as page:
            html = await page.text()
        async with client.get(f"{base}/unanswered.csv") as export:
            assert export.headers["Content-Type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(await export.text())))
    assert "thumbs down" in html and "not covered" in html
    assert "of the knowledge base's embeddings" in html  # the embedded model groups by meaning
    kettles = [r for r in rows if "kettle" in r["question"]]
    assert len(kettles) == 2 and {r["group_size"] for r in kettles} == {"2"}
    assert {r["kind"] for r in kettles} == {"thumbs down", "not covered"}
    (formula,) = [r for r in rows if "HYPERLINK" in r["question"]]
    assert formula["question"].startswith("'=")  # a spreadsheet shows it, never runs it


def test_lexical_groups_by_shared_words() -> None:
    def q(text: str) -> Question:
        return Question("down", text, Place("t", "", "c"), 0, text, "")

    groups = group_lexical([q("reset my password"), q("password reset link"), q("opening hours")])
    assert sorted(len(g.questions) for g in groups) == [1, 2]


async def test_replying_needs_the_platform_and_bad_input_is_answered(serve_console: ServeConsole) -> None:
    served = await serve_console()  # no platform connected in this process (as in `parley console`)
    base = base_url(served)
    place = {"platform": "slack", "workspace": "T1", "channel": "C1", "thread": "1.1"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        assert (await sign_in(client, base)).status == 303
        async with client.get(f"{base}/conversation", params=place) as page:
            html = await page.text()
            assert "no slack connection" in html
        csrf = csrf_of(html)
        for path, extra, status, says in (
            ("/handoffs/reply", {"text": "hello"}, 503, "no slack connection"),
            ("/handoffs/reply", {"text": "  "}, 400, "1 to 3000"),
            ("/handoffs/status", {"status": "resolved"}, 400, "resolve with Resume"),
            ("/handoffs/note", {"note": ""}, 400, "empty"),
            ("/handoffs/assign", {"assignee": "x", "platform": ""}, 400, "platform and channel"),
        ):
            async with client.post(f"{base}{path}", data={"csrf": csrf, **place, **extra}) as response:
                assert response.status == status, (path, extra)
                assert says in await response.text()


async def test_overview_ranges_favicon_and_masked_credentials(
    serve_console: ServeConsole, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-token-value")
    # What `parley run` / `parley console` add to the settings: the platforms, as their packages read them.
    served = await serve_console(platforms={"slack": slack_platform.load_settings(load_bot("support"))})
    base = base_url(served)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        assert (await sign_in(client, base)).status == 303
        async with client.get(f"{base}/overview?days=1") as page:
            html = await page.text()
            assert "Today by the hour (UTC)" in html and '"hourly": true' in html
        async with client.get(f"{base}/overview?from=2026-12-07&to=2026-11-30") as page:
            html = await page.text()
            assert "2026-11-30 to 2026-12-07 (UTC)" in html  # either order; ISO dates
            assert "No data yet" in html and "20261207" not in html
        async with client.get(f"{base}/static/favicon.svg") as icon:
            assert icon.status == 200 and icon.content_type == "image/svg+xml"
        async with client.get(f"{base}/settings") as page:
            html = await page.text()
            assert (
                "platform slack" in html and "settings.slack_bot_token" in html and "******** (set)" in html
            )
            assert "xoxb-secret-token-value" not in html
