"""The arcade bot's own Python: ``/story`` gets an explicit ``continue`` switch, and three tools:
``roll_dice`` and ``trivia_scoreboard`` (read-only) and ``trivia_award`` (asks the player first), with a
per-server scoreboard in Redis (a sorted set per Discord guild; in DMs, where every user's "guild" is ``@me``,
one per user, named in the user's data set so that ``/forget`` erases it).

The built-in ``/story`` already continues the conversation's last story when its prompt is the word
"continue" or its ``continue`` option is true. Declaring the option makes it a real switch on Discord
(a boolean slash-command option) and a ``--continue yes`` flag in text, next to genre and length.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import replace
from typing import Annotated, Any

from pydantic import Field

from core.bot import BotConfig
from core.builtins import BUILTINS
from core.commands import Command, CommandOption
from core.context import TurnContext
from core.keys import KeySpace, user_data_entry
from core.safety.limits import user_tag
from core.tools.function import function_tool
from core.tools.spec import Tool, ToolContext
from core.types import DIRECT_WORKSPACE, ReplyResult

CONTINUE = CommandOption("continue", "Continue the last story told in this conversation", kind="boolean")


SCOREBOARD_TOP = 10
KEYS = KeySpace("arcade")
USER_DATA_TTL = 90 * 86_400  # the scoreboard has no expiry; its index entry is refreshed by each award


def scoreboard_key(ctx: ToolContext) -> str:
    """The server's scoreboard; in a DM (no real server) the user's own."""
    place = ctx.turn.place
    if place.workspace == DIRECT_WORKSPACE:
        who = user_tag(place.platform, ctx.turn.author.id)
        return f"parley:arcade:trivia:{place.platform}:{DIRECT_WORKSPACE}:{who}"
    return f"parley:arcade:trivia:{place.platform}:{place.workspace}"


@function_tool
async def roll_dice(
    count: Annotated[int, Field(ge=1, le=20, description="how many dice")] = 1,
    sides: Annotated[int, Field(ge=2, le=1000, description="sides per die")] = 6,
) -> dict[str, Any]:
    """Roll dice fairly (e.g. 2 six-sided dice). Use this instead of inventing numbers."""
    rolls = [secrets.randbelow(sides) + 1 for _ in range(count)]
    return {"rolls": rolls, "total": sum(rolls)}


@function_tool
async def trivia_scoreboard(ctx: ToolContext) -> str:
    """This server's trivia scoreboard (top 10)."""
    if ctx.redis is None:
        return "The scoreboard is not available."
    raw: Any = await ctx.redis.zrevrange(scoreboard_key(ctx), 0, SCOREBOARD_TOP - 1, withscores=True)
    if not raw:
        return "No trivia points yet on this server."
    return "\n".join(f"{n}. {name}: {int(score)}" for n, (name, score) in enumerate(raw, 1))


@function_tool(side_effects=True)
async def trivia_award(
    player: Annotated[str, Field(min_length=1, max_length=64, description="the player's display name")],
    points: Annotated[int, Field(ge=1, le=10, description="points for a correct answer")] = 1,
    *,
    ctx: ToolContext,
) -> str:
    """Give a player trivia points on this server's scoreboard (after a correct answer)."""
    if ctx.redis is None:
        return "The scoreboard is not available."
    key = scoreboard_key(ctx)
    total = await ctx.redis.zincrby(key, points, player)
    if ctx.turn.place.workspace == DIRECT_WORKSPACE:  # the user's own board: /forget erases it
        index = KEYS.user_data(ctx.turn.place.platform, ctx.turn.author.id)
        async with ctx.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(index, user_data_entry(key))
            pipe.expire(index, USER_DATA_TTL)
            await pipe.execute()
    return f"{player} now has {int(total or 0)} point(s)."


class ArcadePlugin:
    def __init__(self, config: BotConfig) -> None:
        self._story = "story" in config.commands

    def commands(self) -> Iterable[Command]:
        if not self._story:
            return []
        story = BUILTINS["story"]
        return [replace(story, options=(*story.options, CONTINUE))]

    def tools(self) -> Iterable[Tool]:
        return [roll_dice, trivia_scoreboard, trivia_award]

    async def before_turn(self, ctx: TurnContext) -> ReplyResult | None:
        return None

    async def after_turn(self, ctx: TurnContext, result: ReplyResult) -> ReplyResult:
        return result


def make_plugin(config: BotConfig) -> ArcadePlugin:
    return ArcadePlugin(config)
