"""Model Markdown -> Slack mrkdwn, escaped and mention-safe. Pure functions.

Slack's mrkdwn is not Markdown: ``*bold*``, ``_italic_``, ``~strike~``, ``<url|text>`` links, no headings.
Model output is untrusted: every ``&``, ``<`` and ``>`` is escaped (so no ``<!channel>``, ``<@U…>`` or
``<!subteam^…>`` control sequence can survive) and the plain-text broadcast words (``@here``, ``@channel``,
``@everyone``) get an invisible word joiner after the ``@``. Links become ``<url|text>`` only for http(s)
and mailto URLs; anything else is shown as text.

Code (fenced blocks and inline spans) is kept as written apart from the escaping, which Slack undoes when
it renders, so code reads the same.
"""

from __future__ import annotations

import re

WORD_JOINER = "\u2060"
ZERO_WIDTH_SPACE = "\u200b"

_FENCE_LINE = re.compile(r"^[ \t]{0,3}```")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_BROADCAST = re.compile(r"@(here|channel|everyone)\b", re.IGNORECASE)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$")
_RULE = re.compile(r"^[ \t]{0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+")
_QUOTE = re.compile(r"^([ \t]{0,3}(?:&gt;[ \t]?)+)")
_LINK = re.compile(r"!?\[([^\]\n]{1,300})\]\(\s*([^()\s]{1,2000})(?:\s+\"[^\"\n]*\")?\s*\)")
_AUTOLINK = re.compile(r"&lt;((?:https?://|mailto:)[^\s&]+?)&gt;")
_BARE_URL = re.compile(r"\b(?:https?://|mailto:)[^\s<>|]+[^\s<>|.,;:!?)\]'\"]")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.DOTALL)
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_SAFE_SCHEMES = ("http://", "https://", "mailto:")

# Private-use characters mark protected spans while the prose is rewritten.
_HOLD_OPEN, _HOLD_CLOSE = "\ue000", "\ue001"
_BOLD_MARK = "\ue002"


def escape(text: str) -> str:
    """Escape the three characters Slack treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def neutralise_broadcasts(text: str) -> str:
    """``@here`` -> ``@\u2060here``: reads the same, pings no one."""
    return _BROADCAST.sub(lambda m: "@" + WORD_JOINER + m.group(1), text)


def to_mrkdwn(markdown: str) -> str:
    """Convert model Markdown to safe Slack mrkdwn (the whole text or a streaming prefix of it)."""
    out: list[str] = []
    prose: list[str] = []
    in_fence = False
    for line in markdown.split("\n"):
        if _FENCE_LINE.match(line):
            if not in_fence:
                if prose:
                    out.append(_prose("\n".join(prose)))
                    prose = []
                out.append("```")  # Slack has no language hints: ```python would show "python"
                in_fence = True
            else:
                out.append("```")
                in_fence = False
            continue
        if in_fence:
            out.append(escape(line))
        else:
            prose.append(line)
    if prose:
        out.append(_prose("\n".join(prose)))
    return "\n".join(out)


def _prose(text: str) -> str:
    """Convert a run of lines outside fenced code."""
    held: list[str] = []

    def hold(value: str) -> str:
        held.append(value)
        return f"{_HOLD_OPEN}{len(held) - 1}{_HOLD_CLOSE}"

    # Inline code first: nothing inside it is rewritten.
    text = _INLINE_CODE.sub(lambda m: hold(m.group(1) + escape(m.group(2)) + m.group(1)), text)
    text = escape(text)
    text = _LINK.sub(lambda m: hold(_link(m.group(2), m.group(1))), text)
    text = _AUTOLINK.sub(lambda m: hold(_link(m.group(1), "")), text)
    text = _BARE_URL.sub(lambda m: hold(m.group(0)), text)
    text = "\n".join(_block_line(line) for line in text.split("\n"))
    text = _BOLD.sub(lambda m: _BOLD_MARK + m.group(2) + _BOLD_MARK, text)
    text = _ITALIC_STAR.sub(lambda m: "_" + m.group(1) + "_", text)
    text = _STRIKE.sub(lambda m: "~" + m.group(1) + "~", text)
    text = text.replace(_BOLD_MARK, "*")
    text = neutralise_broadcasts(text)
    return re.sub(f"{_HOLD_OPEN}(\\d+){_HOLD_CLOSE}", lambda m: held[int(m.group(1))], text)


def _block_line(line: str) -> str:
    """Line-level Markdown: headings, rules, bullets, block quotes."""
    quote = _QUOTE.match(line)
    prefix = ""
    if quote:
        prefix = quote.group(1).replace("&gt;", ">")  # a quote marker is not a control sequence
        line = line[quote.end() :]
    heading = _HEADING.match(line)
    if heading:
        title = heading.group(1).replace("**", "").replace("__", "")
        return f"{prefix}{_BOLD_MARK}{title}{_BOLD_MARK}"
    if _RULE.match(line):
        return prefix + "\u2015" * 12
    bullet = _BULLET.match(line)
    if bullet:
        return f"{prefix}{bullet.group(1)}• {line[bullet.end() :]}"
    return prefix + line


def _link(url: str, label: str) -> str:
    """``<url|label>`` for safe schemes; otherwise plain text that cannot be clicked as a link."""
    url = url.strip()
    label = neutralise_broadcasts(label.replace("|", "\u2223").strip())
    if not url.lower().startswith(_SAFE_SCHEMES) or "|" in url:
        return f"{label} ({url})" if label else url
    if not label or label == url:
        return f"<{url}>"
    return f"<{url}|{label}>"


def sanitise_markdown(markdown: str) -> str:
    """Make standard Markdown (for ``chat.startStream``'s ``markdown_text``) mention-safe.

    Native streaming takes Markdown, not mrkdwn, so nothing is converted; the ``<`` of any Slack control
    sequence gets a zero-width space after it (``<!channel>`` -> ``<\u200b!channel>``), and the broadcast
    words are broken as in :func:`to_mrkdwn`.
    """
    text = re.sub(r"<(?=[!@#]|subteam)", "<" + ZERO_WIDTH_SPACE, markdown)
    return neutralise_broadcasts(text)
