"""Commands, defined once here and exposed by every adapter (slash commands, or ``/name args`` as text).

A command handler is an async generator of text deltas, so long answers (``/story``) stream like chat
replies. Option metadata lets adapters register native slash commands (Discord options, Slack usage hints).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from core.types import CommandCall

if TYPE_CHECKING:
    from core.context import TurnContext

CommandHandler = Callable[["TurnContext", CommandCall], AsyncIterator[str]]


@dataclass(frozen=True, slots=True)
class CommandOption:
    name: str
    description: str
    required: bool = False
    choices: tuple[str, ...] = ()
    kind: Literal["string", "boolean", "integer"] = "string"  # how platforms with typed options show it


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    description: str
    handler: CommandHandler
    usage: str = ""  # e.g. "<prompt>"
    args_description: str = ""  # what the free-text argument is, for platforms that need a named option
    options: tuple[CommandOption, ...] = ()
    admin_only: bool = False
    remember: bool = False  # store the command and its answer in the conversation's memory
    ephemeral: bool = False  # the answer is for the asker only, where the platform allows it
    narrates: bool = False  # may be read aloud ([audio] narrate, or its `narrate` option): /story

    def bad_option(self, options: Mapping[str, str]) -> str | None:
        """What is wrong with a call's options (a value outside an option's choices, a switch that is not
        yes/no, a number that is not one), or None. A typed ``--genre <text>`` must not get further than
        the slash command's list of choices lets it."""
        declared = {o.name: o for o in self.options}
        for name, value in options.items():
            option = declared.get(name)
            if option is None:  # not declared: no handler reads it
                continue
            if option.choices and value.lower() not in {c.lower() for c in option.choices}:
                return f"--{name} must be one of: {', '.join(option.choices)}."
            if option.kind == "boolean" and value.lower() not in _SWITCH:
                return f"--{name} takes yes or no."
            if option.kind == "integer" and not value.lstrip("-").isdigit():
                return f"--{name} takes a whole number."
        return None

    def free_text_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """The option values that are free text (no choices, not a switch or number): they reach the model
        like the arguments, so they are moderated like them."""
        declared = {o.name: o for o in self.options}
        return {
            name: value
            for name, value in options.items()
            if (o := declared.get(name)) is not None and o.kind == "string" and not o.choices and value
        }


_SWITCH = {"1", "0", "true", "false", "yes", "no", "on", "off"}


@dataclass
class CommandRegistry:
    _commands: dict[str, Command] = field(default_factory=dict)

    def add(self, command: Command) -> None:
        self._commands[command.name] = command

    def get(self, name: str) -> Command | None:
        return self._commands.get(name.lower())

    def __iter__(self) -> Iterator[Command]:
        return iter(sorted(self._commands.values(), key=lambda c: c.name))

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._commands

    def parse(self, text: str) -> CommandCall | None:
        """``/name args`` -> a call when ``name`` is a known command; ``--key value`` pairs become options."""
        stripped = text.strip()
        if not stripped.startswith("/"):
            return None
        head, _, rest = stripped[1:].partition(" ")
        command = self.get(head)
        if command is None:
            return None
        options: dict[str, str] = {}
        words = rest.split()
        free: list[str] = []
        known = {o.name for o in command.options}
        flags = {o.name for o in command.options if o.kind == "boolean"}
        i = 0
        while i < len(words):
            word = words[i]
            if word.startswith("--") and word[2:] in flags:  # a switch: `--narrate` alone means true
                value = words[i + 1].lower() if i + 1 < len(words) else ""
                given = value in {"true", "false", "yes", "no", "1", "0"}
                options[word[2:]] = value if given else "true"
                i += 2 if given else 1
                continue
            if word.startswith("--") and word[2:] in known and i + 1 < len(words):
                options[word[2:]] = words[i + 1]
                i += 2
                continue
            free.append(word)
            i += 1
        args = " ".join(free) if options else rest.strip()  # keep line breaks unless options were cut out
        return CommandCall(name=command.name, args=args, options=options)
