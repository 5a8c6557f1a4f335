"""A confirmation in words: a tool's template ("Create a ticket: {subject}") filled with its arguments.

Only top-level argument names may appear (``{subject}``; no ``{a.b}``, ``{a[0]}``, conversions or format
specs), and each value is shown verbatim inside an inline code span whose backtick fence is longer than any
run of backticks in the value, so no argument can add formatting, links or mentions, and none is shortened
or changed. A value that cannot be shown so (a newline, over ``INLINE_MAX`` characters, not a string or
number) is shown as "(see details)": the exact arguments are always shown beside the summary. A template
that does not fit the arguments falls back to the plain sentence, never to a half-filled one.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping
from typing import Any

INLINE_MAX = 200
_TICKS = re.compile(r"`+")


def _inline(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, int | float | str):
        text = str(value)
    else:
        return "(see details)"
    if not text or "\n" in text or "\r" in text or len(text) > INLINE_MAX:
        return "(see details)"
    fence = "`" * (max((len(m) for m in _TICKS.findall(text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def render_template(template: str, arguments: Mapping[str, Any]) -> str | None:
    """The filled template, or None when it names something that is not a plain top-level argument."""
    out: list[str] = []
    try:
        for literal, name, spec, conversion in string.Formatter().parse(template):
            out.append(literal)
            if name is None:
                continue
            if spec or conversion or not name.isidentifier() or name not in arguments:
                return None
            out.append(_inline(arguments[name]))
    except ValueError:  # an unbalanced brace
        return None
    return "".join(out)


def confirm_summary(tool: str, arguments: Mapping[str, Any], template: str = "") -> str:
    """What the user is asked to confirm, in words."""
    rendered = render_template(template, arguments) if template else None
    return rendered if rendered is not None else f"I'd like to run **{tool}**."
