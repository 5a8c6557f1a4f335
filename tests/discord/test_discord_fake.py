"""The fake Discord itself, driven by the real, unmodified discord.py client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import discord
import pytest

from tests.fakes.discord import FakeDiscord


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        old = discord.http.Route.BASE
        discord.http.Route.BASE = server.api_url
        try:
            yield server
        finally:
            discord.http.Route.BASE = old


async def _connected(
    fake: FakeDiscord, intents: discord.Intents
) -> tuple[discord.Client, asyncio.Task[None]]:
    client = discord.AutoShardedClient(intents=intents, guild_ready_timeout=0.05)
    ready = asyncio.Event()
    client.event(_setter(ready))
    task = asyncio.create_task(client.start(fake.token))
    await asyncio.wait_for(ready.wait(), 10)
    return client, task


def _setter(ready: asyncio.Event):  # type: ignore[no-untyped-def]
    async def on_ready() -> None:
        ready.set()

    return on_ready


async def _stop(client: discord.Client, task: asyncio.Task[None]) -> None:
    await client.close()
    await task


async def test_login_gateway_and_guilds(fake: FakeDiscord) -> None:
    client, task = await _connected(fake, discord.Intents.default())
    try:
        assert [c.route for c in fake.calls[:3]] == [
            "GET /users/@me",
            "GET /oauth2/applications/@me",
            "GET /gateway/bot",
        ]
        assert client.user is not None
        assert str(client.user.id) == fake.app_id
        assert [str(g.id) for g in client.guilds] == [fake.guild_id]
        (identify,) = fake.identifies
        assert identify.shard == (0, 1)
        assert not identify.intents & (1 << 15)  # default intents: no message content
    finally:
        await _stop(client, task)


async def test_content_is_blank_without_the_intent_unless_mentioned(fake: FakeDiscord) -> None:
    client, task = await _connected(fake, discord.Intents.default())
    seen: list[str] = []
    got = asyncio.Event()

    async def on_message(message: discord.Message) -> None:
        seen.append(message.content)
        if len(seen) == 3:
            got.set()

    client.event(on_message)
    try:
        await fake.send_message("not for you")
        await fake.send_message("for you", mention_bot=True)
        await fake.send_dm("a secret")
        await asyncio.wait_for(got.wait(), 5)
        assert seen == ["", f"<@{fake.app_id}> for you", "a secret"]
    finally:
        await _stop(client, task)


async def test_rate_limits_with_via_are_retried_and_without_are_not(fake: FakeDiscord) -> None:
    client, task = await _connected(fake, discord.Intents.default())
    try:
        channel = client.get_channel(int(fake.general["id"]))
        assert isinstance(channel, discord.TextChannel)
        fake.inject("POST", r"/channels/\d+/messages", 429, retry_after=0.05)
        await channel.send("hello")
        statuses = [c.status for c in fake.calls_to("POST", r"/channels/\d+/messages")]
        assert statuses == [429, 200]
        fake.inject("POST", r"/channels/\d+/messages", 429, via=False)
        with pytest.raises(discord.HTTPException):
            await channel.send("banned?")
        fake.inject("POST", r"/channels/\d+/messages", 403)
        with pytest.raises(discord.Forbidden):
            await channel.send("no perms")
    finally:
        await _stop(client, task)


async def test_interaction_flow_and_deadlines(fake: FakeDiscord) -> None:
    fake.interaction_deadline = 5.0  # the in-time answer must not race a busy machine (it did at 0.3 s)
    client, task = await _connected(fake, discord.Intents.default())
    interactions: asyncio.Queue[discord.Interaction[discord.Client]] = asyncio.Queue()

    async def on_interaction(interaction: discord.Interaction[discord.Client]) -> None:
        await interactions.put(interaction)

    client.event(on_interaction)
    try:
        await fake.slash("story", {"prompt": "dragons"})
        first = await asyncio.wait_for(interactions.get(), 5)
        await first.response.defer(thinking=True)
        await first.edit_original_response(content="once upon a time")
        follow = await first.followup.send("the end", wait=True)
        await follow.edit(content="THE END")
        assert [m["content"] for m in fake.bot_messages()] == ["once upon a time", "THE END"]

        await fake.slash("story", {"prompt": "late"})
        late = await asyncio.wait_for(interactions.get(), 5)
        fake.interaction_deadline = 0.3  # judged when the answer arrives: this one comes too late
        await asyncio.sleep(0.4)
        with pytest.raises(discord.NotFound):
            await late.response.defer()
    finally:
        await _stop(client, task)


async def test_reconnect_resumes_the_session(fake: FakeDiscord) -> None:
    client, task = await _connected(fake, discord.Intents.default())
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    client.event(on_resumed)
    try:
        await fake.drop_connections(code=4000)
        await asyncio.wait_for(resumed.wait(), 10)
        assert len(fake.identifies) == 1  # resumed, not re-identified
    finally:
        await _stop(client, task)
