"""A conversation's place as one Redis member (the console's recent list, handoffs, search postings)."""

from __future__ import annotations

from core.types import Place

_PLACE_SEP = "\x1f"


def encode_place(place: Place) -> str:
    return _PLACE_SEP.join((place.platform, place.workspace, place.channel, place.thread))


def decode_place(member: str) -> Place:
    platform, workspace, channel, thread = ([*member.split(_PLACE_SEP), "", "", "", ""])[:4]
    return Place(platform, workspace, channel, thread)
