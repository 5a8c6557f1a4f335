"""Incremental ingest: read the sources, re-parse only documents whose bytes changed, reuse the chunks and
embeddings of the rest, drop documents that vanished from a re-read root, rebuild the index, publish it.

Parsing, chunking, screening and index building are CPU work and run in a worker thread; only the
embeddings calls and Redis run on the event loop. Nothing here ever sees user text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.kb.calibrate import calibrate
from core.kb.chunking import Sizing, chunk_page, head_text, index_text, sentence_texts
from core.kb.embed import Embedder, sizing
from core.kb.index import KbIndex
from core.kb.model import Chunk, DocumentEntry, IngestReport, Page, content_hash
from core.kb.parsers import Limits, ParseError, parse
from core.kb.screen import Screen
from core.kb.settings import KbConfig
from core.kb.sources import FetchLimits, Naming, RawDoc, gather_sources
from core.kb.store import KbStore
from core.net.guard import FetchPolicy

Progress = Callable[[int], None]


@dataclass
class _Parsed:
    doc: RawDoc
    chunks: list[Chunk]
    error: str = ""


def _process(
    docs: Sequence[RawDoc],
    cfg: KbConfig,
    screen: Screen,
    report: IngestReport,
    progress: Progress | None,
    embedder: Embedder | None,
) -> list[_Parsed]:
    size: Sizing = sizing(embedder, cfg)
    limits = Limits(cfg.max_pdf_pages, cfg.max_text_bytes)
    out: list[_Parsed] = []
    for doc in docs:
        try:
            title, url, sections = parse(doc.data, doc.fmt, limits)
        except ParseError as exc:
            out.append(_Parsed(doc, [], str(exc)))
            if progress:
                progress(1)
            continue
        name = doc.source.rsplit("/", 1)[-1]
        clean = []
        for section in sections:
            flag = screen.section(doc.source, section)
            if flag is not None:
                report.flagged.append(flag)
            if flag is None or flag.kept:
                clean.append(section)
        page = Page(doc.source, doc.link(url), title or name, tuple(clean), doc.collection)
        chunks: list[Chunk] = []
        for chunk in chunk_page(page, size):
            kept, flagged, redacted = screen.check(chunk)
            if flagged is not None:
                report.flagged.append(flagged)
            report.redacted += int(redacted)
            if kept is not None:
                chunks.append(kept)
        out.append(_Parsed(doc, chunks, "" if chunks or sections else "no text"))
        if progress:
            progress(1)
    return out


async def ingest(
    targets: Sequence[str],
    *,
    store: KbStore,
    cfg: KbConfig,
    naming: Naming,
    screen: Screen,
    embedder: Embedder | None,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
    rebuild: bool = False,
) -> IngestReport:
    """``rebuild``: re-read and re-embed everything, ignoring the published index; the new index is built
    beside it and replaces it only when the whole ingest succeeded (a failure keeps the old one serving)."""
    report = IngestReport()
    policy = FetchPolicy(tuple(cfg.fetch_allow), allow_http=cfg.fetch_allow_http, setting="[kb] fetch_allow")
    limits = FetchLimits(cfg.max_pages, cfg.sitemap_depth)
    docs, skipped = await gather_sources(targets, naming, policy, limits)
    report.skipped += [(s.source, s.reason) for s in skipped]
    old = None if rebuild else await store.load()
    old_docs = old.documents if old else {}
    old_chunks: dict[str, list[Chunk]] = {}
    for chunk in old.chunks if old else []:
        old_chunks.setdefault(chunk.source, []).append(chunk)

    seen: dict[str, RawDoc] = {}
    for doc in docs:
        seen.setdefault(doc.source, doc)  # the same file reached from two roots counts once
    # A document is re-processed when its bytes change, or how it is chunked and screened does.
    recipe = (
        f"{cfg.chunk_tokens}:{cfg.overlap_tokens}:{screen.allow_flagged}:{screen.redactor is not None}:"
        f"{embedder.model if embedder is not None else ''}:{cfg.max_pdf_pages}:{cfg.max_text_bytes}"
    )
    hashes = {s: content_hash(f"{d.hash}:{recipe}") for s, d in seen.items()}
    changed = [
        d for d in seen.values() if d.source not in old_docs or old_docs[d.source].hash != hashes[d.source]
    ]
    origins = {d.origin for d in seen.values()} | {naming.source_of_target(t) for t in targets}
    vanished = [s for s, e in old_docs.items() if e.origin in origins and s not in seen]
    report.pages = len(seen)
    report.unchanged = len(seen) - len(changed)
    report.added = sum(1 for d in changed if d.source not in old_docs)
    report.changed = len(changed) - report.added
    report.removed = len(vanished)
    if on_total:
        on_total(len(changed))
    model_same = old is not None and embedder is not None and old.embed_model == embedder.model
    if (
        not changed
        and not vanished
        and old is not None
        and (embedder is None) == (old.vectors is None)
        and (embedder is None or model_same)
        and (old.vectors is None or old.vectors.sentences is not None)  # an index from before: add them
    ):
        report.chunks = old.size
        return report  # nothing to do: no new version

    parsed = await asyncio.to_thread(_process, changed, cfg, screen, report, progress, embedder)
    documents = {s: e for s, e in old_docs.items() if s not in vanished}
    chunks: list[Chunk] = []
    fresh = {p.doc.source: p for p in parsed}
    for source in sorted(documents.keys() | fresh.keys()):
        if source in fresh:
            p = fresh[source]
            if p.error:
                report.skipped.append((source, p.error))
                documents.pop(source, None)
                continue
            title = p.chunks[0].title if p.chunks else ""
            documents[source] = DocumentEntry(source, p.doc.origin, hashes[source], len(p.chunks), title)
            chunks += p.chunks
        else:
            chunks += old_chunks.get(source, [])
    report.chunks = len(chunks)

    vectors = heads = None
    sentences: list[np.ndarray] | None = None
    if embedder is not None and chunks:
        reuse = old.embeddings_by_hash() if old is not None and model_same else {}
        missing = [c for c in chunks if c.hash not in reuse]
        if missing:
            texts = [index_text(c) for c in missing]
            head_texts = list(dict.fromkeys(head_text(c) for c in missing))
            lines = [sentence_texts(c) for c in missing]
            line_texts = list(dict.fromkeys(t for ls in lines for t in ls))
            rows = await embedder.embed(texts + head_texts + line_texts)
            report.embedded = len(missing)
            by_head = dict(zip(head_texts, rows[len(texts) : len(texts) + len(head_texts)], strict=True))
            by_line = dict(zip(line_texts, rows[len(texts) + len(head_texts) :], strict=True))
            for c, row, ls in zip(missing, rows, lines, strict=False):
                reuse[c.hash] = (
                    np.asarray(row, np.float32),
                    np.asarray(by_head[head_text(c)], np.float32),
                    np.asarray([by_line[t] for t in ls], np.float32).reshape(len(ls), len(row)),
                )
        vectors = np.stack([reuse[c.hash][0] for c in chunks]).astype(np.float32)
        heads = np.stack([reuse[c.hash][1] for c in chunks]).astype(np.float32)
        sentences = [reuse[c.hash][2] for c in chunks]
    index = await asyncio.to_thread(_build, chunks, documents, vectors, heads, sentences, embedder)
    report.version = await store.publish(index, "")
    summary = report.summary()
    await store.note_summary(summary)
    return report


def _build(
    chunks: list[Chunk],
    documents: dict[str, DocumentEntry],
    vectors: np.ndarray | None,
    heads: np.ndarray | None,
    sentences: list[np.ndarray] | None,
    embedder: Embedder | None,
) -> KbIndex:
    model = embedder.model if embedder is not None else ""
    index = KbIndex.build(chunks, documents, vectors, model, heads=heads, sentences=sentences)
    if index.vectors is not None:
        index.calibration = calibrate(index.chunks, index.vectors)
    return index
