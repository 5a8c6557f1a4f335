"""The plugin API: what a bot's ``plugin.py`` provides, what it receives, and which names are stable.

A bot folder may hold a ``plugin.py`` (anywhere: ``bots/NAME``, ``./mybot``, ``/srv/bots/helpdesk``). Parley
imports it as a package module (so ``from . import helpers`` works beside it) and calls::

    def make_plugin(config: BotConfig) -> Plugin: ...

``config`` is the bot's validated ``bot.toml`` (environment overrides applied). The object it returns is a
:class:`Plugin`. Subclass :class:`BasePlugin` and override only what you need::

    from core.plugin import BasePlugin, BotConfig, Command, TurnContext, function_tool

    @function_tool
    async def roll(sides: int = 6) -> str:
        "Roll one die."
        ...

    class MyPlugin(BasePlugin):
        def tools(self): return [roll]

    def make_plugin(config: BotConfig) -> MyPlugin:
        return MyPlugin(config)

A plugin that fails to import, lacks ``make_plugin`` or raises in it stops the bot at start-up with one
line naming the file and the error (``parley: config error: ./mybot/plugin.py: ...``). A tool named in
``[tools] allow`` that neither the plugin nor an MCP server provides stops it too.

**Stable names** (kept across minor versions; everything else in ``core`` may change): the names this module
exports (``__all__``). Of :class:`TurnContext`, plugins may read ``turn`` (who, where, what), ``state`` (the
loaded conversation: ``paused``, ``persona``, ``messages``), ``persona``, ``bot`` and ``log``, and set
``kind``; of :class:`ReplyResult`, ``text``, ``kind``, ``persona`` and ``citations``; use
:func:`dataclasses.replace` to change a result.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from core.bot import BotConfig
from core.commands import Command, CommandOption
from core.tools.function import function_tool
from core.tools.spec import Tool, ToolContext
from core.types import CommandCall, ReplyKind, ReplyResult

if TYPE_CHECKING:
    from core.context import TurnContext

PLUGIN_API_VERSION = 1  # raised when a stable name changes incompatibly

__all__ = [
    "PLUGIN_API_VERSION",
    "BasePlugin",
    "BotConfig",
    "Command",
    "CommandCall",
    "CommandOption",
    "Plugin",
    "ReplyKind",
    "ReplyResult",
    "Tool",
    "ToolContext",
    "TurnContext",
    "function_tool",
]


def __getattr__(name: str) -> object:
    # TurnContext lives beside the engine, which imports the bot definition: importing it lazily keeps
    # ``core.plugin`` importable from ``core.bot`` without a cycle.
    if name == "TurnContext":
        from core.context import TurnContext

        return TurnContext
    raise AttributeError(name)


@runtime_checkable
class Plugin(Protocol):
    """What the engine calls on a bot's plugin. Every method is called on the engine's event loop: do no
    blocking I/O in them (use ``asyncio.to_thread``)."""

    def commands(self) -> Iterable[Command]:
        """Extra slash/typed commands (``/resume``, ``/trivia``); they go through the same admin checks,
        moderation and limits as the built-in ones. Called once at start-up."""
        ...

    def tools(self) -> Iterable[Tool]:
        """Python function tools the model may call (``@function_tool``); only those named in ``[tools]
        allow`` (or all, when it is empty) are offered. A tool marked ``side_effects`` asks the user to
        confirm before it runs. Called once at start-up."""
        ...

    async def before_turn(self, ctx: TurnContext) -> ReplyResult | None:
        """Called for every chat turn after input moderation, before retrieval and the model. Return a
        result to answer without the model (a handoff, a canned answer), or ``None`` to go on."""
        ...

    async def after_turn(self, ctx: TurnContext, result: ReplyResult) -> ReplyResult:
        """Called with the model's checked answer before it is stored and shown; return it, maybe
        changed (``dataclasses.replace``). Not called for refusals or errors."""
        ...


class BasePlugin:
    """A :class:`Plugin` that does nothing: subclass it and override what your bot needs."""

    def __init__(self, config: BotConfig) -> None:
        self.config = config

    def commands(self) -> Iterable[Command]:
        return ()

    def tools(self) -> Iterable[Tool]:
        return ()

    async def before_turn(self, ctx: TurnContext) -> ReplyResult | None:
        return None

    async def after_turn(self, ctx: TurnContext, result: ReplyResult) -> ReplyResult:
        return result
