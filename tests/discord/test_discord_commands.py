"""The command registry -> Discord application-command definitions, and their fingerprint."""

from __future__ import annotations

import dataclasses

from adapters.discord.commands import (
    BOOLEAN,
    MANAGE_GUILD,
    STRING,
    args_options,
    command_definitions,
    definitions_hash,
)
from core.builtins import BUILTINS
from core.commands import Command, CommandOption


def _by_name(defs: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(d["name"]): d for d in defs}


def test_builtins_become_slash_commands() -> None:
    defs = _by_name(command_definitions(BUILTINS.values(), admin_names={"persona"}))
    assert set(defs) == {"help", "reset", "persona", "story"}
    story = defs["story"]
    options = {o["name"]: o for o in story["options"]}  # type: ignore[attr-defined]
    assert options["prompt"]["type"] == STRING
    assert not options["prompt"]["required"]  # "/story continue" needs no prompt
    assert {c["value"] for c in options["genre"]["choices"]} >= {"fantasy", "sci-fi"}
    assert {c["value"] for c in options["length"]["choices"]} == {"short", "medium", "long"}
    assert defs["persona"]["default_member_permissions"] == str(MANAGE_GUILD)
    assert defs["help"]["default_member_permissions"] is None
    assert defs["help"]["options"] == []
    for d in defs.values():
        assert len(str(d["description"])) <= 100


async def _noop(ctx: object, call: object):  # type: ignore[no-untyped-def]
    yield ""


def test_required_argument_comes_first_and_flags_are_booleans() -> None:
    cmd = Command(
        "roll",
        "Roll dice",
        _noop,
        usage="<dice>",
        options=(
            CommandOption("private", "Only you see it", kind="boolean"),
            CommandOption("style", "How", choices=("a", "b")),
        ),
    )
    (d,) = command_definitions([cmd])
    names = [o["name"] for o in d["options"]]
    assert names[0] == "dice"
    assert d["options"][0]["required"]
    assert {o["name"]: o["type"] for o in d["options"]}["private"] == BOOLEAN


def test_hash_is_stable_and_sensitive() -> None:
    defs = command_definitions(BUILTINS.values())
    again = command_definitions(reversed(list(BUILTINS.values())))
    assert definitions_hash(defs, "global") == definitions_hash(again, "global")
    assert definitions_hash(defs, "global") != definitions_hash(defs, "guild:1")
    changed = [dataclasses.replace(c, description=c.description + "!") for c in BUILTINS.values()]
    assert definitions_hash(command_definitions(changed), "global") != definitions_hash(defs, "global")


def test_args_options_map_commands_to_their_text_option() -> None:
    mapping = args_options(BUILTINS.values())
    assert mapping["story"] == "prompt"
    assert mapping["persona"] == "name"
    assert mapping["help"] is None
