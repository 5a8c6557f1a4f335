"""Where a queued Discord reply goes: targets <-> queue routes (strings only, no secrets), pure."""

from __future__ import annotations

import pytest

from adapters.discord.route import (
    ChannelTarget,
    InteractionTarget,
    interaction_token_key,
    route_for,
    target_of,
)
from core.keys import KeySpace
from core.ops.jobs import Job, Route, decode_job, encode_job
from core.types import Author, Place, Turn


@pytest.mark.parametrize(
    "target",
    [
        ChannelTarget(111, 222, 333, typing=True),
        ChannelTarget(111, None, None, typing=False),  # a DM, or a thread the bot opened: no reply reference
        InteractionTarget(9, 8, 7, 6, 5, deadline=1_700_000_000.25, ephemeral=True),
        InteractionTarget(9, 8, 7, 6, None, deadline=1_700_000_000.0),
    ],
)
def test_targets_survive_the_queue(target: ChannelTarget | InteractionTarget) -> None:
    route = route_for(target)
    assert route.platform == "discord"
    assert all(isinstance(v, str) for v in route.data.values())
    turn = Turn(author=Author("u"), place=Place("discord", "g", "c"), text="hi")
    job = decode_job(encode_job(Job(turn, route)))
    assert target_of(job.route) == target


def test_no_token_in_the_route() -> None:
    route = route_for(InteractionTarget(9, 8, 7, 6, 5, deadline=1.0))
    assert "token" not in route.data
    assert interaction_token_key(KeySpace("arcade"), 9) == "parley:arcade:discord:interaction:9"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"kind": "channel"},
        {"kind": "carrier-pigeon", "channel": "1"},
        {"kind": "interaction", "channel": "1"},
    ],
)
def test_foreign_routes_are_refused(data: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="not a Discord route"):
        target_of(Route("discord", data))
