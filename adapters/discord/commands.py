"""The engine's command registry -> Discord application-command definitions, and their fingerprint.

Pure functions: :func:`command_definitions` builds the JSON Discord's bulk-overwrite endpoint takes;
:func:`definitions_hash` fingerprints it so the adapter re-registers commands only when they changed
(Discord allows 200 command creates per day per guild).

A command's free-text argument (``/story <prompt>``) becomes a string option named after its usage
(``<prompt>`` -> ``prompt``); its declared options follow, with their choices. Admin-only commands get
``default_member_permissions`` = Manage Server, so Discord hides them from other members.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from core.commands import Command, CommandOption

MANAGE_GUILD = 1 << 5
STRING, INTEGER, BOOLEAN = 3, 4, 5
CHAT_INPUT = 1
CONTEXT_GUILD, CONTEXT_BOT_DM = 0, 1
GUILD_INSTALL = 0
MAX_CHOICES = 25

_NAME_OK = re.compile(r"[^-_a-z0-9]")


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def option_name(name: str) -> str:
    cleaned = _NAME_OK.sub("", name.lower().replace(" ", "_"))
    return (cleaned or "text")[:32]


def args_option_name(command: Command) -> str | None:
    """The option that carries a command's free-text argument, or None when it takes none."""
    if not command.usage and not command.args_description:
        return None
    match = re.search(r"[<\[]([^>\]]+)[>\]]", command.usage)
    return option_name(match.group(1).split("|")[0].strip() if match else "text")


def _args_required(command: Command) -> bool:
    usage = command.usage.strip()
    return usage.startswith("<") and "|" not in usage


def _option_type(option: CommandOption) -> int:
    return {"boolean": BOOLEAN, "integer": INTEGER}.get(option.kind, STRING)


def _option(option: CommandOption) -> dict[str, Any]:
    kind = _option_type(option)
    data: dict[str, Any] = {
        "type": kind,
        "name": option_name(option.name),
        "description": _clip(option.description or option.name, 100),
        "required": option.required,
    }
    if kind == STRING and option.choices:
        data["choices"] = [{"name": _clip(c, 100), "value": c[:100]} for c in option.choices[:MAX_CHOICES]]
    return data


def command_definition(command: Command, *, admin: bool = False) -> dict[str, Any]:
    options: list[dict[str, Any]] = []
    args = args_option_name(command)
    if args is not None:
        options.append(
            {
                "type": STRING,
                "name": args,
                "description": _clip(command.args_description or args, 100),
                "required": _args_required(command),
            }
        )
    options += [_option(o) for o in command.options if option_name(o.name) != args]
    # Discord wants required options first.
    options.sort(key=lambda o: not o["required"])
    definition: dict[str, Any] = {
        "type": CHAT_INPUT,
        "name": option_name(command.name),
        "description": _clip(command.description or command.name, 100),
        "options": options,
        "contexts": [CONTEXT_GUILD, CONTEXT_BOT_DM],
        "integration_types": [GUILD_INSTALL],
        "default_member_permissions": str(MANAGE_GUILD) if admin or command.admin_only else None,
        "nsfw": False,
    }
    return definition


def command_definitions(
    commands: Iterable[Command], *, admin_names: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Definitions for Discord's ``PUT /applications/{id}/commands``, sorted by name."""
    return sorted(
        (command_definition(c, admin=c.name in admin_names) for c in commands), key=lambda d: str(d["name"])
    )


def definitions_hash(definitions: list[dict[str, Any]], scope: str) -> str:
    """A stable fingerprint of what would be registered where (``global`` or ``guild:<id>``)."""
    canonical = json.dumps({"scope": scope, "commands": definitions}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def args_options(commands: Iterable[Command]) -> Mapping[str, str | None]:
    """Command name -> the option holding its free-text argument (to rebuild the CommandCall)."""
    return {option_name(c.name): args_option_name(c) for c in commands}
