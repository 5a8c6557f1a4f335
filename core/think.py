"""``<think>...</think>`` removal for local reasoning models (DeepSeek-R1, Qwen3, QwQ ...).

Their reasoning must reach neither users nor memory. :class:`ThinkFilter` works on a stream whose tags may be
split across deltas (``"<th"`` + ``"ink>"``): it holds back only the few characters that could still be the
start of a tag. :func:`strip_think` does the same for a whole text (what is stored).
"""

from __future__ import annotations

import re

OPEN = "<think>"
CLOSE = "</think>"
_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)\s*", re.DOTALL | re.IGNORECASE)


def strip_think(text: str) -> str:
    """``text`` without its think blocks (an unclosed block runs to the end of the text)."""
    if "<think" not in text.lower():
        return text
    return _BLOCK.sub("", text).lstrip()


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag`` (case-insensitive)."""
    if "<" not in text[1 - len(tag) :]:  # every start of a tag begins with "<": the common case, per token
        return 0
    low = text[-len(tag) :].lower()
    for n in range(min(len(low), len(tag) - 1), 0, -1):
        if tag.startswith(low[-n:]):
            return n
    return 0


class ThinkFilter:
    """Feed streamed deltas; get back what may be shown. Call :meth:`flush` at the end of the stream."""

    def __init__(self) -> None:
        self._buf = ""
        self._inside = False
        self._started = True  # False right after a think block: the whitespace after it is dropped

    def feed(self, delta: str) -> str:
        self._buf += delta
        if self._started and not self._inside and "<" not in self._buf:
            text, self._buf = self._buf, ""  # no tag can start here: all of it may be shown
            return text
        out: list[str] = []
        while self._buf:
            if self._inside:
                at = self._buf.lower().find(CLOSE)
                if at < 0:
                    keep = _partial_suffix(self._buf, CLOSE)
                    self._buf = self._buf[len(self._buf) - keep :] if keep else ""
                    break
                self._buf = self._buf[at + len(CLOSE) :]
                self._inside = False
                self._started = False
                continue
            at = self._buf.lower().find(OPEN)
            if at >= 0:
                out.append(self._buf[:at])
                self._buf = self._buf[at + len(OPEN) :]
                self._inside = True
                continue
            keep = _partial_suffix(self._buf, OPEN)
            emit = self._buf[: len(self._buf) - keep]
            self._buf = self._buf[len(self._buf) - keep :] if keep else ""
            out.append(emit)
            break
        text = "".join(out)
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        return text

    def flush(self) -> str:
        """What was held back as a possible tag start (an unclosed think block is dropped)."""
        rest, self._buf = ("" if self._inside else self._buf), ""
        return rest if self._started else rest.lstrip()
