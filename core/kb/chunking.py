"""Pages -> chunks: one per section, long sections cut at paragraph (then sentence) boundaries into pieces of
about ``chunk_tokens`` with the last ``overlap_tokens`` of one piece repeated at the start of the next, so a
fact that straddles a cut is whole in at least one chunk. Sizes are estimated at 4 characters a token."""

from __future__ import annotations

import re
from collections.abc import Iterator

from core.kb.model import Chunk, Page, content_hash

CHARS_PER_TOKEN = 4
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _pieces(text: str, limit: int) -> list[str]:
    """Paragraphs (or sentences of an over-long paragraph) no longer than ``limit`` characters."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        if len(para) <= limit:
            out.append(para)
            continue
        for sentence in _SENTENCE.split(para):
            while len(sentence) > limit:  # one enormous sentence: cut it at a space
                cut = sentence.rfind(" ", 0, limit)
                cut = cut if cut > limit // 2 else limit
                out.append(sentence[:cut])
                sentence = sentence[cut:].lstrip()
            out.append(sentence)
    return [p for p in out if p.strip()]


def _tail(text: str, chars: int) -> str:
    if chars <= 0 or len(text) <= chars:
        return text if chars > 0 else ""
    cut = text.find(" ", len(text) - chars)
    return text[cut + 1 :] if cut >= 0 else text[-chars:]


def split_section(text: str, chunk_tokens: int, overlap_tokens: int) -> list[str]:
    limit = chunk_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return [text]
    overlap = min(overlap_tokens * CHARS_PER_TOKEN, limit // 2)
    chunks: list[str] = []
    current = ""
    for piece in _pieces(text, limit - overlap):
        if current and len(current) + 2 + len(piece) > limit:
            chunks.append(current)
            carried = _tail(current, overlap)
            current = f"{carried} … {piece}" if carried else piece
        else:
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks


def chunk_page(page: Page, chunk_tokens: int, overlap_tokens: int) -> Iterator[Chunk]:
    for section in page.sections:
        for text in split_section(section.text, chunk_tokens, overlap_tokens):
            yield Chunk(
                id=-1,  # numbered when the index is assembled
                source=page.source,
                url=page.url,
                title=page.title,
                headings=section.headings,
                text=text,
                hash=content_hash("\x1f".join((page.title, *section.headings, text))),
                collection=page.collection,
            )


def index_text(chunk: Chunk) -> str:
    """What the retrievers see: the title and heading path carry much of a chunk's meaning."""
    return "\n".join(p for p in (chunk.title, chunk.heading_path, chunk.text) if p)
