"""{{display_name}}'s own Python: one tool the model may call and one command (see core/plugin.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Annotated

from pydantic import Field

from core.plugin import BasePlugin, BotConfig, Command, CommandCall, Tool, TurnContext, function_tool


@function_tool
async def word_count(
    text: Annotated[str, Field(max_length=20_000, description="the text to count the words of")],
) -> dict[str, int]:
    """Count the words and characters of a text exactly."""
    return {"words": len(text.split()), "characters": len(text)}


async def _about(ctx: TurnContext, call: CommandCall) -> AsyncIterator[str]:
    yield f"I'm {ctx.bot.config.display_name}, speaking as {ctx.persona.name}. Built with Parley."


ABOUT = Command("about", "What this bot is", _about)


class Plugin(BasePlugin):
    def commands(self) -> Iterable[Command]:
        return [ABOUT]

    def tools(self) -> Iterable[Tool]:
        return [word_count]


def make_plugin(config: BotConfig) -> Plugin:
    return Plugin(config)
