"""Image fetching goes through the shared outbound-fetch guard (core/net/guard.py), narrowed to the
platform's own hosts: a redirect from the platform's host into 127.0.0.1 is refused, a foreign host is
refused before any credentials are asked for, and Slack's file hosts need https."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest
from aiohttp import web

from core.errors import MediaError
from core.media.fetch import ImageFetcher, ImageHosts, image_policy
from core.net.guard import FetchPolicy, FetchRefused
from core.types import ImageRef, Place
from tests.fakes.images import png


class Platform:
    """A Delivery as the fetcher sees it: its file hosts and (like Slack) credentials."""

    def __init__(self, hosts: ImageHosts) -> None:
        self.hosts = hosts
        self.asked: list[str] = []

    def image_hosts(self) -> ImageHosts:
        return self.hosts

    async def image_headers(self, ref: ImageRef, place: Place) -> Mapping[str, str]:
        self.asked.append(ref.url)
        return {"Authorization": "Bearer xoxb-secret"}


@pytest.fixture
async def servers() -> AsyncIterator[tuple[str, str, list[str]]]:
    """(the platform's file host on 127.0.0.2, an internal service on 127.0.0.1, what reached it)."""
    reached: list[str] = []

    async def internal(request: web.Request) -> web.Response:
        reached.append(request.headers.get("Authorization", ""))
        return web.Response(body=png(), content_type="image/png")

    inside = web.AppRunner(web.Application())
    inside.app.router.add_get("/meta.png", internal)
    await inside.setup()
    site = web.TCPSite(inside, "127.0.0.1", 0)
    await site.start()
    inside_url = f"http://127.0.0.1:{inside.addresses[0][1]}"

    async def bounce(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"{inside_url}/meta.png")

    async def image(_: web.Request) -> web.Response:
        return web.Response(body=png(), content_type="image/png")

    files = web.AppRunner(web.Application())
    files.app.router.add_get("/files/a.png", bounce)
    files.app.router.add_get("/files/ok.png", image)
    await files.setup()
    site = web.TCPSite(files, "127.0.0.2", 0)
    await site.start()
    yield f"http://127.0.0.2:{files.addresses[0][1]}", inside_url, reached
    await files.cleanup()
    await inside.cleanup()


def _fetcher(platform: Platform) -> ImageFetcher:
    return ImageFetcher(
        max_bytes=1_000_000, types=frozenset({"image/png"}), timeout=10, auth_for=lambda _: platform
    )


async def test_a_redirect_from_the_platform_host_into_loopback_is_refused(
    servers: tuple[str, str, list[str]],
) -> None:
    files, _, reached = servers
    # The operator pointed the platform's API at the fake on 127.0.0.2 (as tests and proxies do).
    platform = Platform(ImageHosts(("files.slack.com",), configured=f"{files}/api/"))
    fetcher = _fetcher(platform)
    place = Place("slack", "T1", "C1")
    try:
        got = await fetcher.fetch(ImageRef(f"{files}/files/ok.png", "image/png", 100), place)
        assert got.mime == "image/png"  # the configured host itself is fine
        with pytest.raises(MediaError, match=r"the image URL was refused: http://127\.0\.0\.1"):
            await fetcher.fetch(ImageRef(f"{files}/files/a.png", "image/png", 100), place)
        assert reached == []  # the internal service was never contacted
        # A URL on a host the platform does not serve files from: refused before credentials are asked.
        with pytest.raises(MediaError, match="not one this platform serves files from"):
            await fetcher.fetch(ImageRef("https://evil.example.net/x.png", "image/png", 100), place)
        assert platform.asked == [f"{files}/files/ok.png", f"{files}/files/a.png"]
    finally:
        await fetcher.aclose()


def test_slack_file_hosts_need_https() -> None:
    policy = image_policy(FetchPolicy(), ImageHosts(("slack.com", ".slack.com")))
    policy.check_url("https://files.slack.com/files-pri/T1-F1/a.png")
    with pytest.raises(FetchRefused, match="plain http is refused"):
        policy.check_url("http://files.slack.com/files-pri/T1-F1/a.png")
    with pytest.raises(FetchRefused, match="not one this platform serves files from"):
        policy.check_url("https://files.slack.com.evil.example/a.png")


def test_discord_attachments_come_from_its_cdn_only() -> None:
    policy = image_policy(
        FetchPolicy(),
        ImageHosts(("cdn.discordapp.com", "media.discordapp.net"), "https://discord.com/api/v10"),
    )
    policy.check_url("https://cdn.discordapp.com/attachments/1/2/a.png")
    for url in ("https://evil.example/a.png", "http://cdn.discordapp.com/attachments/1/2/a.png"):
        with pytest.raises(FetchRefused):
            policy.check_url(url)
