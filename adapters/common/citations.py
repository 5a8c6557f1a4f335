"""Knowledge-base citations under a reply, from ``ReplyResult.citations``.

Platforms get one Markdown line of links (``Sources: [1] [Title](url) · [2] ...``) that each adapter's
formatter already turns into its own links: Slack ``<url|title>``, Discord ``[title](<url>)`` with embeds
suppressed. The terminal gets plain URLs, one per line.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.types import Citation, ReplyResult


def _label(title: str) -> str:
    # A bracket in a title would end the link text early; a newline would break the line.
    return " ".join(title.replace("[", "(").replace("]", ")").split()) or "source"


def sources_markdown(citations: Sequence[Citation]) -> str:
    if not citations:
        return ""
    items = [
        f"[{c.number}] [{_label(c.title)}]({c.url})" if c.url else f"[{c.number}] {_label(c.title)}"
        for c in citations
    ]
    return "\n\nSources: " + " · ".join(items)


def sources_plain(citations: Sequence[Citation]) -> str:
    if not citations:
        return ""
    lines = [f"  [{c.number}] {_label(c.title)}" + (f": {c.url}" if c.url else "") for c in citations]
    return "Sources:\n" + "\n".join(lines)


def shown_text(result: ReplyResult) -> str:
    """What a platform shows for a finished reply: its text and, when it cites any, the sources line."""
    return result.text + sources_markdown(result.citations) if result.text else result.text
