"""Small helpers shared by the core tests."""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import Connection

from core.types import Author, CommandCall, Place, Turn


def make_turn(
    text: str,
    *,
    user: str = "u1",
    name: str = "Ada",
    platform: str = "test",
    workspace: str = "w1",
    channel: str = "c1",
    thread: str = "t1",
    admin: bool = False,
    bot: bool = False,
    event_id: str = "",
    addressed: bool = True,
    command: CommandCall | None = None,
) -> Turn:
    return Turn(
        author=Author(user, name, is_bot=bot, is_admin=admin),
        place=Place(platform, workspace, channel, thread),
        text=text,
        event_id=event_id,
        addressed=addressed,
        command=command,
    )


class CountingConnection(Connection):
    """A redis-py connection that counts round trips (one per packed send: a pipeline is one)."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        await super().send_packed_command(command, check_health)
