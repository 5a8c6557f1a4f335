"""The knowledge base's value types: parsed pages, chunks, and what a retrieval returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def content_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text under one heading path (``("Returns", "Refund times")``)."""

    headings: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class Page:
    """One parsed document."""

    source: str  # path (relative to its root) or URL: the document's identity across ingests
    url: str  # what a citation links to
    title: str
    sections: tuple[Section, ...]
    collection: str = "general"


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a page, as indexed and as put in a prompt."""

    id: int  # position in the index (stable within one version)
    source: str
    url: str
    title: str
    headings: tuple[str, ...]
    text: str
    hash: str
    collection: str = "general"
    context: str = ""  # the page's opening sentence, on chunks after its first (embedded with the text)

    @property
    def heading_path(self) -> str:
        return " › ".join(self.headings)


@dataclass(frozen=True, slots=True)
class DocumentEntry:
    """What an index remembers of a document, to re-ingest only what changed."""

    source: str
    origin: str  # the root it was found under (a folder, a sitemap, a URL): vanished documents are per root
    hash: str  # of the raw bytes
    chunks: int
    title: str = ""


@dataclass(frozen=True, slots=True)
class Hit:
    """A ranked chunk with the scores that placed it."""

    chunk: Chunk
    score: float  # fused (reciprocal rank fusion)
    lexical: float = 0.0  # BM25
    similarity: float | None = None  # cosine, when embeddings were used
    coverage: float = 0.0  # idf-weighted share of the question's words in the chunk


@dataclass(frozen=True, slots=True)
class Flagged:
    """A chunk the injection tripwires caught at ingest."""

    source: str
    headings: tuple[str, ...]
    rules: str
    kept: bool


@dataclass
class IngestReport:
    pages: int = 0
    chunks: int = 0
    unchanged: int = 0
    changed: int = 0
    added: int = 0
    removed: int = 0
    embedded: int = 0
    redacted: int = 0
    version: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    flagged: list[Flagged] = field(default_factory=list)

    def summary(self) -> str:
        skipped = f"{len(self.skipped)} skipped"
        if self.skipped:
            reasons: dict[str, int] = {}
            for _, why in self.skipped:
                reasons[why] = reasons.get(why, 0) + 1
            skipped += " (" + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())) + ")"
        flagged = sum(1 for f in self.flagged if not f.kept)
        version = f"version {self.version}" if self.version else "index unchanged"
        return (
            f"{self.pages} pages ({self.added} new, {self.changed} changed, {self.unchanged} unchanged, "
            f"{self.removed} removed), {self.chunks} chunks, {self.embedded} embedded, {skipped}, "
            f"{flagged} chunks held back by injection tripwires, {self.redacted} with personal data "
            f"redacted; "
            f"{version}"
        )
