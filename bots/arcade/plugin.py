"""The arcade bot's own Python: ``/story`` gets an explicit ``continue`` switch.

The built-in ``/story`` already continues the conversation's last story when its prompt is the word
"continue" or its ``continue`` option is true. Declaring the option makes it a real switch on Discord
(a boolean slash-command option) and a ``--continue yes`` flag in text, next to genre and length.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from core.bot import BotConfig
from core.builtins import BUILTINS
from core.commands import Command, CommandOption
from core.engine import TurnContext
from core.types import ReplyResult

CONTINUE = CommandOption("continue", "Continue the last story told in this conversation", kind="boolean")


class ArcadePlugin:
    def __init__(self, config: BotConfig) -> None:
        self._story = "story" in config.commands

    def commands(self) -> Iterable[Command]:
        if not self._story:
            return []
        story = BUILTINS["story"]
        return [replace(story, options=(*story.options, CONTINUE))]

    async def before_turn(self, ctx: TurnContext) -> ReplyResult | None:
        return None

    async def after_turn(self, ctx: TurnContext, result: ReplyResult) -> ReplyResult:
        return result


def make_plugin(config: BotConfig) -> ArcadePlugin:
    return ArcadePlugin(config)
