"""Pages -> chunks, sized in the embedding model's own tokens.

A page is read as a run of sentences (paragraph breaks and section headings kept) and packed greedily into
chunks of about ``target`` tokens. A chunk ends at a heading once it holds ``section_tokens`` of text (so a
section with facts of its own keeps its heading path), else it packs on across the heading: a page's intro and
its facts, or a heading with one line under it, share a chunk instead of making tiny chunks that rank on their
title alone. A heading never ends a chunk (it moves on with the text it introduces). Within a section, the
last sentences of a chunk, up to ``overlap`` tokens, open the next one, so a fact that straddles a cut is
whole in at least one chunk.

Every chunk carries its page title, heading path and (after the page's first) the page's opening sentence as
context; the whole of what is embedded (:func:`index_text`) stays within the model's limit (256 word pieces
for the embedded MiniLM), so nothing is cut off silently. Servers whose tokenizer we do not have are sized at
4 characters a token.

Linear time: every sentence is counted once (one batched tokenizer call) and cut by index, never re-sliced.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from core.kb.model import Chunk, Page, content_hash

CHARS_PER_TOKEN = 4
CONTEXT_TOKENS = 40  # a page's opening sentence carried on its later chunks, when it is this short
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_PARAGRAPH = re.compile(r"\n\s*\n")

Counter = Callable[[Sequence[str]], list[int]]
"""Tokens per text (the embedding model's tokenizer, or the 4-characters estimate)."""


def estimate_tokens(texts: Sequence[str]) -> list[int]:
    return [-(-len(t) // CHARS_PER_TOKEN) for t in texts]


@dataclass(frozen=True)
class Sizing:
    count: Counter = estimate_tokens
    target: int = 200  # tokens of text per chunk, about
    limit: int = 100_000  # what the model reads at most (title + context + text), never passed
    overlap: int = 30
    section_tokens: int = 40  # a chunk this full ends at the next heading; smaller ones merge on


@dataclass(frozen=True, slots=True)
class _Piece:
    text: str
    tokens: int
    kind: str  # "s" a sentence, "p" a paragraph's first sentence, "h" a heading line


def _cut_long(text: str, budget: int, count: Counter) -> list[str]:
    """A sentence over ``budget`` tokens, cut at word boundaries (one tokenizer call, index slicing)."""
    words = text.split()
    sizes = count(words)
    out: list[str] = []
    start, used = 0, 0
    for i, size in enumerate(sizes):
        if size > budget:  # one enormous "word": cut it by characters
            if start < i:
                out.append(" ".join(words[start:i]))
            word = words[i]
            step = max(1, budget * CHARS_PER_TOKEN // 2)
            out += [word[j : j + step] for j in range(0, len(word), step)]
            start, used = i + 1, 0
            continue
        if used + size > budget and start < i:
            out.append(" ".join(words[start:i]))
            start, used = i, 0
        used += size
    if start < len(words):
        out.append(" ".join(words[start:]))
    return out


def _pieces(page: Page, budget: int, count: Counter) -> list[tuple[tuple[str, ...], _Piece]]:
    """The page as (heading path, piece) in reading order; every piece fits ``budget``."""
    raw: list[tuple[tuple[str, ...], str, str]] = []
    for section in page.sections:
        if section.headings:
            raw.append((section.headings, section.headings[-1], "h"))
        for para in _PARAGRAPH.split(section.text):
            for n, sentence in enumerate(s for s in _SENTENCE.split(para.strip()) if s.strip()):
                raw.append((section.headings, sentence.strip(), "p" if n == 0 else "s"))
    sizes = count([text for _, text, _ in raw])
    out: list[tuple[tuple[str, ...], _Piece]] = []
    for (headings, text, kind), size in zip(raw, sizes, strict=True):
        if size <= budget:
            out.append((headings, _Piece(text, size, kind)))
            continue
        parts = _cut_long(text, budget, count)
        for n, (part, part_size) in enumerate(zip(parts, count(parts), strict=True)):
            out.append((headings, _Piece(part, min(part_size, budget), kind if n == 0 else "s")))
    return out


def _join(pieces: Sequence[_Piece]) -> str:
    out: list[str] = []
    for n, piece in enumerate(pieces):
        if n:
            out.append(" " if piece.kind == "s" else "\n\n")
        out.append(piece.text if piece.kind != "h" else f"{piece.text}:")
    return "".join(out).replace(":\n\n", ":\n")


def _context(page: Page, count: Counter) -> str:
    for section in page.sections:
        first = _SENTENCE.split(section.text.strip(), maxsplit=1)[0].strip()
        if first:
            return first if count([first])[0] <= CONTEXT_TOKENS else ""
    return ""


def chunk_page(page: Page, sizing: Sizing) -> Iterator[Chunk]:
    count = sizing.count
    context = _context(page, count)
    prefix_cache: dict[tuple[tuple[str, ...], bool], int] = {}

    def room(headings: tuple[str, ...], with_context: bool) -> int:
        """Tokens of text a chunk starting under ``headings`` may hold."""
        key = (headings, with_context)
        if key not in prefix_cache:
            probe = Chunk(-1, "", "", page.title, headings, "", "", context=context if with_context else "")
            prefix = count([index_text(probe)])[0] + 2  # [CLS] and [SEP] are in the model's limit
            prefix_cache[key] = max(16, min(sizing.target, sizing.limit - prefix))
        return prefix_cache[key]

    floor = min((room(s.headings, True) for s in page.sections), default=sizing.target)
    pieces = _pieces(page, floor, count)
    first = True
    start = 0
    while start < len(pieces):
        headings = pieces[start][0]
        budget = room(headings, not first)
        end, used = start, 0
        while end < len(pieces) and used + pieces[end][1].tokens + (end > start) <= budget:
            if end > start and pieces[end][1].kind == "h" and used >= sizing.section_tokens:
                break  # a section with facts of its own keeps its heading path: a new chunk starts here
            used += pieces[end][1].tokens + (end > start)
            end += 1
        end = max(end, start + 1)
        while end - 1 > start and pieces[end - 1][1].kind == "h":  # a heading goes with its text
            end -= 1
        chosen = [p for _, p in pieces[start:end]]
        text = _join(chosen)
        # Sections merged into one chunk: the heading path they share (each one's own heading is in the text).
        headings = _common([h for h, _ in pieces[start:end]])
        yield Chunk(
            id=-1,  # numbered when the index is assembled
            source=page.source,
            url=page.url,
            title=page.title,
            headings=headings,
            text=text,
            hash=content_hash("\x1f".join((page.title, *headings, context if not first else "", text))),
            collection=page.collection,
            context=context if not first else "",
        )
        if end >= len(pieces):
            break
        # Carry the last sentences (up to ``overlap`` tokens) into the next chunk; always move forward.
        back, carried = end, 0
        while back - 1 > start and pieces[back - 1][1].kind != "h":
            size = pieces[back - 1][1].tokens
            if carried + size > sizing.overlap:
                break
            carried += size
            back -= 1
        # Only within a section, and when the next piece still fits beside what is carried (else the carry
        # could loop forever).
        fits = carried + pieces[end][1].tokens + (end - back) <= floor
        start = back if fits and pieces[end][1].kind != "h" else end
        first = False


def _common(paths: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    first = paths[0]
    n = len(first)
    for path in paths[1:]:
        n = min(n, len(path))
        while n and path[:n] != first[:n]:
            n -= 1
    return first[:n]


def index_text(chunk: Chunk) -> str:
    """What the retrievers see: the title, heading path and page context carry much of a chunk's meaning."""
    return "\n".join(p for p in (chunk.title, chunk.heading_path, chunk.context, chunk.text) if p)


def head_text(chunk: Chunk) -> str:
    """A chunk's heading vector's text: the page title and heading path (what the section answers)."""
    return " › ".join(p for p in (chunk.title, chunk.heading_path) if p) or chunk.text[:200]


_LINE_START = re.compile(r"^[\s>*#+\-|]+|[\s*|]+$")
SENTENCE_WORDS = 3  # shorter lines ("Contact", "1. Open") say too little to match a question alone


def sentence_texts(chunk: Chunk) -> list[str]:
    """A chunk's sentences (its text split at sentence ends and line breaks, list marks stripped), each
    embedded alone so a question about one fact can match the line that states it (see vectors.py)."""
    out = []
    for line in chunk.text.splitlines():
        for sentence in _SENTENCE.split(line):
            text = _LINE_START.sub("", sentence)
            if len(text.split()) >= SENTENCE_WORDS:
                out.append(text)
    return list(dict.fromkeys(out))
