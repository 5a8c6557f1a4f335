"""Confirmation on Discord: the arcade bot through real discord.py and the fake Discord; trivia_award (a
side effect: the server's scoreboard in Redis) runs only when the asking player clicks Confirm."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from adapters.discord.confirm import custom_id
from tests.discord.conftest import BotFactory

# The Discord harness's fixtures (re-exported names are how pytest finds them here).
from tests.discord.conftest import bot_factory as bot_factory
from tests.discord.conftest import fake_discord as fake_discord
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import Call, FakeOpenAI, Reply, ToolCalls


def button_ids(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message.get("components", []) for c in row.get("components", [])]


@pytest.mark.parametrize("queue", [True, False], ids=["queued", "direct"])
async def test_discord_buttons_run_the_award_only_for_the_asker(
    bot_factory: BotFactory,
    fake_discord: FakeDiscord,
    fake_openai: FakeOpenAI,
    redis_client: aioredis.Redis,
    queue: bool,
) -> None:
    fake = fake_discord
    board = f"parley:arcade:trivia:discord:{fake.guild_id}"
    fake_openai.queue(
        ToolCalls([Call("roll_dice", {"count": 2, "sides": 6})]),  # read-only: runs at once
        ToolCalls([Call("trivia_award", {"player": "Alice", "points": 3})], text="Correct! "),
    )
    async with bot_factory(queue=queue) as bot:
        await fake.send_message("I answered Paris, give me my points", mention_bot=True)
        await fake.wait_for(lambda: any(button_ids(m) for m in fake.bot_messages()))
        (asking,) = [m for m in fake.bot_messages() if button_ids(m)]
        assert bot.runtime.tools is not None
        pending = button_ids(asking)[0].rsplit(":", 1)[-1]
        assert button_ids(asking) == [custom_id(pending, True), custom_id(pending, False)]
        question = [m for m in fake.bot_messages() if '"player": "Alice"' in m["content"]]
        assert question  # the exact arguments were shown
        assert await redis_client.zscore(board, "Alice") is None

        # Bob clicks Alice's Confirm: refused in an ephemeral answer to Bob alone (once), nothing
        # awarded, the buttons stay.
        await fake.click(asking, custom_id(pending, True), author=fake.bob)
        await fake.wait_for(
            lambda: any("Only the person who asked" in m["content"] for m in fake.bot_messages())
        )
        refusals = [m for m in fake.bot_messages() if "Only the person who asked" in m["content"]]
        assert len(refusals) == 1 and refusals[0]["flags"] & 64  # EPHEMERAL: Bob's eyes only
        assert not any(button_ids(m) for m in refusals)  # and no feedback or other buttons on it
        assert await redis_client.zscore(board, "Alice") is None
        assert button_ids(fake.messages[asking["id"]])

        fake_openai.queue(Reply("3 points to Alice!"))
        await fake.click(asking, custom_id(pending, True), author=fake.alice)
        await fake.wait_for(lambda: any(m["content"] == "3 points to Alice!" for m in fake.bot_messages()))
        assert await redis_client.zscore(board, "Alice") == 3
        assert button_ids(fake.messages[asking["id"]]) == []  # answered: the buttons are gone
    # The dice were really rolled by the tool and the model saw the result as fenced data.
    second = fake_openai.chat_requests[1].body["messages"]
    assert '<tool_result tool="roll_dice">' in second[-1]["content"]
    assert '"total"' in second[-1]["content"]
