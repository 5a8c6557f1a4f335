"""What a click on one of the bot's buttons becomes: a command run by the person who clicked. Pure.

Adapters read a button's value and build the turn with these; the core checks the rest (whose call it is,
whether the story's round is still open).
"""

from __future__ import annotations

from types import MappingProxyType

from core.reply import Choice
from core.types import CommandCall

CONFIRM, CANCEL = "confirm", "cancel"


def confirm_call(pending_id: str, confirmed: bool) -> CommandCall:
    """``/tool confirm <id>`` (or cancel): a click on a proposed call's buttons, or y/n in the terminal."""
    return CommandCall("tool", f"{CONFIRM if confirmed else CANCEL} {pending_id}")


def pending_of(call: CommandCall) -> tuple[bool, str]:
    """(confirmed, pending id) of a :func:`confirm_call` command."""
    words = call.args.split()
    return (bool(words) and words[0] == CONFIRM), (words[-1] if words else "")


def vote_call(choice: Choice) -> CommandCall:
    """``/story <n>`` for the story and round the button belongs to (a stale button changes nothing)."""
    options = MappingProxyType({"story": choice.story, "round": str(choice.round)})
    return CommandCall("story", str(choice.number), options)
