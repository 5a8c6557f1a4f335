"""Split long text into platform-sized messages on paragraph and code-fence boundaries.

A code fence cut in two is closed at the end of one message and reopened (with its language) at the start
of the next, so every message renders on its own.
"""

from __future__ import annotations

_FENCE = "```"
_CLOSE = "\n```"
_MIN_FILL = 0.5  # a boundary earlier than half the limit wastes too much space: look for a finer one


def open_fence(text: str) -> str | None:
    """The opening fence line (for example ``"```python"``) if ``text`` ends inside a code block."""
    opening: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(_FENCE):
            opening = None if opening is not None else stripped[:40]
    return opening


def _best_cut(window: str, floor: int) -> int:
    """Index to cut ``window`` at: paragraph, then line, then word boundary, else a hard cut."""
    low = max(floor, int(len(window) * _MIN_FILL))
    for sep in ("\n\n", "\n", " "):
        at = window.rfind(sep, low)
        if at > floor:
            return at + (len(sep) if sep == " " else 0)
    return len(window)


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters, keeping code fences balanced."""
    if limit < 64:
        raise ValueError("limit must be at least 64 characters")
    if len(text) <= limit:
        return [text]
    chunks: list[str] = []
    reopen = ""
    rest = text
    while rest:
        body = reopen + rest
        if len(body) <= limit:
            chunks.append(body)
            break
        window = body[: limit - len(_CLOSE)]
        cut = _best_cut(window, len(reopen))
        piece, rest = body[:cut], body[cut:]
        fence = open_fence(piece)
        if fence is not None:
            piece = piece.rstrip("\n") + _CLOSE
            reopen = fence + "\n"
        else:
            piece = piece.rstrip()
            reopen = ""
        if fence is None:
            rest = rest.lstrip("\n ")
        elif rest.startswith("\n"):
            rest = rest[1:]  # only the line break we cut at: blank lines inside code are content
        if piece.strip():
            chunks.append(piece)
    return chunks
