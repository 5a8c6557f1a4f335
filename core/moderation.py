"""Moderation port and the built-in rule-based moderator.

Every turn's input and every reply's output go through a :class:`Moderator`. A verdict says what to do:
allow, refuse (with the persona's refusal text), redact (go on with the rewritten text) or flag (allow, and
record for the moderators). The safety issue adds a moderation-endpoint chain behind the same port.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.errors import ConfigError
from core.types import Turn


class Action(enum.StrEnum):
    ALLOW = "allow"
    REFUSE = "refuse"
    REDACT = "redact"
    FLAG = "flag"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    text: str
    category: str = ""
    reason: str = ""
    flag: str = ""  # non-empty: report to the moderators under this category (also for refusals)

    @property
    def blocked(self) -> bool:
        return self.action is Action.REFUSE


class Moderator(Protocol):
    async def check_input(self, turn: Turn, text: str) -> Verdict: ...

    def remote_only(self, text: str) -> bool:
        """True when nothing local objects to (or rewrites) ``text`` and only a remote check is left: the
        text may go to the model while that verdict is pending (``[moderation] early_llm_request``)."""
        ...

    async def check_output(self, turn: Turn, text: str, *, final: bool, since: int = 0) -> Verdict:
        """``since``: on a streamed (non-final) check, ``text[:since]`` was already checked; a moderator may
        then look only at what follows (plus an overlap), as the safety chain does."""
        ...

    async def aclose(self) -> None: ...


def compile_patterns(patterns: Sequence[str], *, source: str) -> list[re.Pattern[str]]:
    """Compile block-list regexes at start-up: a broken one is a config error, not a bot that refuses all."""
    compiled = []
    for i, pattern in enumerate(patterns):
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise ConfigError(f"{source}[{i}]: invalid regular expression: {exc}") from None
    return compiled
