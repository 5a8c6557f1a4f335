"""The console opens a conversation in its platform through that platform's ``link_for(place)`` (registered by
the bots layer, as `parley run` / `parley console` do): core builds no Slack or Discord URL itself."""

from __future__ import annotations

import aiohttp

from adapters.discord import link_for as discord_link
from adapters.slack import link_for as slack_link
from core.console.mount import build_console
from core.types import Place
from tests.conftest import RuntimeFactory
from tests.console.conftest import RUNTIME, ServeConsole, base_url, console_settings, sign_in


def test_each_platform_links_its_own_places() -> None:
    thread = Place("slack", "T1", "C0GENERAL", "1700000300.000100")
    assert slack_link(thread) == "https://slack.com/archives/C0GENERAL/p1700000300000100"
    assert slack_link(Place("slack", "T1", "D0DM", "", is_direct=True)) == "https://slack.com/archives/D0DM"
    assert slack_link(Place("slack", "T1", "")) == ""
    # A Discord thread is a channel of its own; DMs are under @me.
    assert discord_link(Place("discord", "111", "222", "333")) == "https://discord.com/channels/111/333"
    assert discord_link(Place("discord", "111", "222")) == "https://discord.com/channels/111/222"
    assert (
        discord_link(Place("discord", "@me", "444", is_direct=True)) == "https://discord.com/channels/@me/444"
    )
    assert discord_link(Place("discord", "", "222")) == ""


async def test_the_conversation_page_links_to_slack_and_discord(serve_console: ServeConsole) -> None:
    base = base_url(await serve_console())  # both platforms' link_for registered
    places = (
        (
            {"platform": "slack", "workspace": "T1", "channel": "C1", "thread": "1.5"},
            "Slack",
            "archives/C1/p15",
        ),
        (
            {"platform": "discord", "workspace": "11", "channel": "22", "thread": "33"},
            "Discord",
            "channels/11/33",
        ),
    )
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        assert (await sign_in(client, base)).status == 303
        for place, name, path in places:
            async with client.get(f"{base}/conversation", params=place) as page:
                html = await page.text()
            assert f"open in {name}" in html and path in html, name
        # A platform that registered no link_for gets no link (the console does not guess a URL).
        terminal = {"platform": "console", "workspace": "local", "channel": "me", "thread": "default"}
        async with client.get(f"{base}/conversation", params=terminal) as page:
            assert "open in" not in await page.text()


async def test_without_links_the_console_shows_none(runtime_factory: RuntimeFactory) -> None:
    async with runtime_factory("support", app={"console": console_settings()}, **RUNTIME) as rt:
        console = await build_console(rt)  # nothing registered
        assert console.thread_link(Place("slack", "T1", "C1", "1.5")) == ""
