"""What the registry knows about one tool, whatever implements it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from core.types import Turn


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON Schema of the arguments object
    side_effects: bool = False  # True: runs only after the asking user confirms the exact arguments
    admin_only: bool = False
    source: str = "python"  # "python" or "mcp:<server>"
    confirm: str = (
        ""  # what the user confirms, in words: "Create a ticket: {subject}" (core/tools/wording.py)
    )

    def openai(self) -> dict[str, Any]:
        """The Chat Completions ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


class ConversationControl(Protocol):
    """What a tool may do to the conversation it runs in (the engine has it)."""

    async def pause(self, turn: Turn, reason: str = "handoff") -> None: ...


@dataclass
class ToolContext:
    """Handed to Python tools that declare a ``ctx: ToolContext`` parameter (it is not in their schema)."""

    turn: Turn
    redis: aioredis.Redis | None = None
    control: ConversationControl | None = None
    meta: dict[str, str] = field(default_factory=dict)  # flags for the turn's result (e.g. handoff)


class Tool(Protocol):
    spec: ToolSpec

    async def call(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str: ...
