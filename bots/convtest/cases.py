"""Conversation tests: the TOML a bot folder keeps in ``tests/*.toml``, validated into frozen models.

One file holds any number of cases; each case is one fresh conversation (its own channel and thread)::

    [[case]]
    name = "looks up an order"
    [[case.turn]]
    user = "where's my order A1001?"
    model = [                                   # scripted mode only: what the model does, request by request
        { call = "order_status", args = { order_id = "A1001" } },
        { text = "Order A1001 shipped on 2 December." },
    ]
    expect = { contains = "A1001", calls = [{ tool = "order_status", args = { order_id = "A1001" } }] }

A turn says ``user = "..."`` (a message or a ``/command``) or ``confirm = true|false`` (the answer to the
confirmation the previous reply asked for, as the Confirm / Cancel buttons give it). ``--live`` ignores
``model`` and asks the configured model instead.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import ConfigError
from core.settings import describe_validation_error

Kind = Literal["answer", "refusal", "handoff", "confirm", "command", "error", "ignored"]


class ModelStep(BaseModel):
    """One model response in scripted mode: text, or one tool call (``call`` + ``args``), or several
    calls at once (``calls``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = ""
    call: str = ""
    args: dict[str, Any] = Field(default_factory=dict)
    calls: list[dict[str, Any]] = Field(default_factory=list)  # [{ call = "...", args = {...} }, ...]

    @model_validator(mode="after")
    def _one(self) -> ModelStep:
        if sum(bool(x) for x in (self.text, self.call, self.calls)) != 1:
            raise ValueError("a model step is exactly one of text, call (+ args) or calls")
        return self

    def tool_calls(self) -> list[tuple[str, dict[str, Any]]]:
        if self.call:
            return [(self.call, self.args)]
        return [(str(c.get("call", "")), dict(c.get("args") or {})) for c in self.calls]


class CallExpect(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)  # these keys with these values (others may be there)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Expect(BaseModel):
    """What a turn's reply must satisfy; every key is optional and all given keys must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contains: list[str] = Field(default_factory=list)  # each, case-insensitively
    not_contains: list[str] = Field(default_factory=list)
    matches: str = ""  # a regular expression (re.search, case-insensitive)
    equals: str | None = None  # the whole reply (a failure shows a diff)
    kind: Kind | None = None
    persona: str = ""
    cites: list[str] = Field(default_factory=list)  # a cited source's title or link contains each
    calls: list[CallExpect] = Field(default_factory=list)  # the model called these (any order)
    no_calls: bool = False  # the model called no tool
    confirm: str = ""  # the reply asks to confirm a call of this tool

    _lists = field_validator("contains", "not_contains", "cites", mode="before")(_as_list)


class TurnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str | None = None
    confirm: bool | None = None
    model: list[ModelStep] = Field(default_factory=list)
    expect: Expect = Field(default_factory=Expect)

    @model_validator(mode="after")
    def _input(self) -> TurnSpec:
        if (self.user is None) == (self.confirm is None):
            raise ValueError("a turn has exactly one of user (a message) or confirm (true or false)")
        return self

    @field_validator("model", mode="before")
    @classmethod
    def _steps(cls, value: Any) -> Any:
        return [{"text": value}] if isinstance(value, str) else value


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    user_name: str = "Tester"
    admin: bool = False  # the speaker is an admin of the place (persona switches, admin-only tools)
    live: bool = True  # false: scripted mode only (e.g. it pins exact model wording)
    turn: list[TurnSpec] = Field(min_length=1)


class CaseFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    case: list[Case] = Field(default_factory=list)


def load_cases(folder: Path) -> list[tuple[Path, Case]]:
    """Every case in ``folder/tests/*.toml`` (sorted by file, then as written)."""
    found: list[tuple[Path, Case]] = []
    for path in sorted((folder / "tests").glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
            parsed = CaseFile.model_validate(raw)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except ValidationError as exc:
            raise ConfigError(f"{path}: {describe_validation_error(exc, prefix='')}") from None
        names = [c.name for c in parsed.case]
        if len(set(names)) != len(names):
            raise ConfigError(f"{path}: two cases share a name")
        found.extend((path, case) for case in parsed.case)
    return found
