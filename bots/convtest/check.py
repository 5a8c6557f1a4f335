"""Checking one turn's reply against its ``expect`` table, with failures a person can read."""

from __future__ import annotations

import difflib
import re
import textwrap
from dataclasses import dataclass
from typing import Any

from bots.convtest.cases import Expect
from core.reply import ReplyResult


@dataclass(frozen=True)
class TurnOutcome:
    result: ReplyResult
    calls: tuple[tuple[str, dict[str, Any]], ...]  # the tools the model asked for during the turn


@dataclass(frozen=True)
class Failure:
    where: str  # "turn 2"
    what: str  # which expectation
    detail: str  # expected vs got, possibly a diff
    reply: str

    def summary(self) -> str:
        first = next((line for line in self.detail.splitlines() if line.strip()), "")
        return f"{self.where}: {self.what}: {first}"

    def describe(self, indent: str = "  ") -> str:
        lines = [f"{self.where}: {self.what}", textwrap.indent(self.detail, "  ")]
        if self.reply and "\n---" not in self.detail:  # a diff already shows the reply
            lines.append("  the reply was:")
            lines.append(textwrap.indent(self.reply.strip() or "(empty)", "  | "))
        return textwrap.indent("\n".join(lines), indent)


def kind_of(result: ReplyResult) -> str:
    """The turn's kind as a test names it: a handoff or a confirmation question first, else the engine's."""
    if result.handoff:
        return "handoff"
    if result.question is not None:
        return "confirm"
    return result.kind.value


def confirm_tool(result: ReplyResult) -> str:
    return result.question.tool if result.question is not None else ""


def _subset(want: dict[str, Any], got: dict[str, Any]) -> bool:
    for key, value in want.items():
        if key not in got:
            return False
        have = got[key]
        if isinstance(value, str) and isinstance(have, str):
            if value.lower() not in have.lower():  # "include given values": a substring of the argument
                return False
        elif value != have:
            return False
    return True


def _calls_text(calls: tuple[tuple[str, dict[str, Any]], ...]) -> str:
    return "; ".join(f"{name}({args})" for name, args in calls) or "none"


def check_turn(expect: Expect, outcome: TurnOutcome, where: str) -> Failure | None:
    result = outcome.result
    text = result.text
    low = text.lower()

    def fail(what: str, detail: str) -> Failure:
        return Failure(where, what, detail, text)

    if expect.equals is not None and text.strip() != expect.equals.strip():
        diff = "\n".join(
            difflib.unified_diff(
                expect.equals.strip().splitlines(),
                text.strip().splitlines(),
                "expected",
                "reply",
                lineterm="",
            )
        )
        return fail("the reply differs from `equals`", "\n" + diff)
    for part in expect.contains:
        if part.lower() not in low:
            return fail("`contains`", f"expected the reply to contain {part!r}")
    for part in expect.not_contains:
        if part.lower() in low:
            return fail("`not_contains`", f"expected the reply not to contain {part!r}")
    if expect.matches and not re.search(expect.matches, text, re.IGNORECASE | re.DOTALL):
        return fail("`matches`", f"expected the reply to match /{expect.matches}/")
    if expect.kind is not None and (got := kind_of(result)) != expect.kind:
        return fail("`kind`", f"expected kind {expect.kind!r}, got {got!r}")
    if expect.persona and result.persona != expect.persona:
        return fail("`persona`", f"expected persona {expect.persona!r}, got {result.persona!r}")
    for source in expect.cites:
        if not any(source.lower() in f"{c.title} {c.url}".lower() for c in result.citations):
            cited = (
                "; ".join(f"[{c.number}] {c.title} {c.url}".strip() for c in result.citations) or "nothing"
            )
            return fail("`cites`", f"expected a citation of {source!r}, cited: {cited}")
    for call in expect.calls:
        if not any(name == call.tool and _subset(call.args, args) for name, args in outcome.calls):
            return fail(
                "`calls`",
                f"expected a call of {call.tool}({call.args}); the model called {_calls_text(outcome.calls)}",
            )
    if expect.no_calls and outcome.calls:
        return fail("`no_calls`", f"expected no tool call, the model called: {_calls_text(outcome.calls)}")
    if expect.confirm and confirm_tool(result) != expect.confirm:
        asked = confirm_tool(result) or "nothing"
        return fail(
            "`confirm`", f"expected a confirmation question for {expect.confirm!r}, asked for: {asked}"
        )
    return None
