"""Model output (Markdown) -> Discord message text: mention-safe, embed-safe, rendered the way Discord can.

Discord renders most Markdown itself (bold, italics, lists, quotes, code blocks, ``#``-``###`` headings and
masked links), so the text is mostly kept. What changes:

- **Mentions are neutralised textually** (``@everyone``, ``@here``, ``<@id>``, ``<@!id>``, ``<@&id>``) with a
  zero-width space, on top of ``allowed_mentions`` that ping no one on every request: model output is
  untrusted (OWASP LLM01) and a copy-pasted reply must not ping either.
- **Links do not unfurl**: bare URLs become ``<url>`` and masked links ``[text](<url>)``, so a model-written
  link cannot leak data through an embed preview fetched by Discord (on top of SUPPRESS_EMBEDS on every
  request: adapters/discord/sink.py). A URL is found wherever Discord's autolinker finds one: the scheme in
  any case (``HTTPS://``), and glued to what comes before it (``xhttps://a`` and ``/https://a`` link
  ``https://a``, which becomes ``x<https://a>``).
- Headings deeper than ``###`` (not rendered by Discord) become bold lines; pipe tables (not rendered) are
  put in a code block so their columns stay aligned.
"""

from __future__ import annotations

import re

ZWSP = "\u200b"

_EVERYONE = re.compile(r"@(everyone|here)\b", re.IGNORECASE)
_ID_MENTION = re.compile(r"<(@[!&]?|#)(\d+)>")
_FENCE_LINE = re.compile(r"^\s*```")
_DEEP_HEADING = re.compile(r"^#{4,6}\s+(.+?)\s*#*\s*$")
_MASKED_LINK = re.compile(r"\[([^\]\n]+)\]\((?!<)(https?://[^\s)]+)\)", re.IGNORECASE)
# Discord's autolinker starts a link at any "http(s)://" not already wrapped (its text rule stops before a
# word followed by ":" and before punctuation), so nothing may be required before the scheme but "not <".
_BARE_URL = re.compile(r"(?<!<)(https?://[^\s<>()\[\]]*[^\s<>()\[\].,;:!?'\"])", re.IGNORECASE)
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def neutralise_mentions(text: str) -> str:
    """Make every mention-looking token inert, whatever ``allowed_mentions`` says."""
    text = _EVERYONE.sub(lambda m: f"@{ZWSP}{m.group(1)}", text)
    # Channel links (<#id>) never ping: keep them. User and role mentions get broken up.
    return _ID_MENTION.sub(
        lambda m: m.group(0) if m.group(1) == "#" else f"<{m.group(1)}{ZWSP}{m.group(2)}>", text
    )


def _unembed_links(line: str, wrap: bool = True) -> str:
    if not wrap:
        return line
    line = _MASKED_LINK.sub(lambda m: f"[{m.group(1)}](<{m.group(2)}>)", line)
    return _BARE_URL.sub(lambda m: f"<{m.group(1)}>", line)


def _prose(lines: list[str], wrap_links: bool = True) -> list[str]:
    """Rewrite lines outside code blocks: deep headings, tables, links."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _TABLE_ROW.match(line) and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]):
            j = i
            while j < len(lines) and (_TABLE_ROW.match(lines[j]) or _TABLE_RULE.match(lines[j])):
                j += 1
            out += ["```", *lines[i:j], "```"]
            i = j
            continue
        heading = _DEEP_HEADING.match(line)
        if heading:
            line = f"**{heading.group(1)}**"
        out.append(_unembed_links(line, wrap_links))
        i += 1
    return out


def to_discord(text: str, *, wrap_links: bool = True) -> str:
    """Format model Markdown for a Discord message (see the module docstring). ``wrap_links=False``: a
    persona whose link previews are on (``link_previews``)."""
    lines = text.split("\n")
    out: list[str] = []
    prose: list[str] = []
    in_code = False
    for line in lines:
        if _FENCE_LINE.match(line):
            if not in_code:
                out += _prose(prose, wrap_links)
                prose = []
            in_code = not in_code
            out.append(line)
        elif in_code:
            out.append(line)
        else:
            prose.append(line)
    out += _prose(prose, wrap_links)
    return neutralise_mentions("\n".join(out))
