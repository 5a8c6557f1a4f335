"""Where documents come from: folders (walked), single files, URLs and sitemaps (fetched through the
outbound-fetch guard, core/net/guard.py).

Every document gets an identity (``source``) that stays the same across ingests: a path relative to the
bot's folder when it lives there (else absolute), or the URL. ``origin`` is the root it was found under:
re-ingesting a root removes the documents that vanished from it, and only those.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selectolax.lexbor import LexborHTMLParser

from core.kb.errors import SourceError
from core.kb.parsers import FORMATS, format_of
from core.net.guard import FetchError, FetchPolicy, GuardedFetcher

MAX_BYTES = 20 * 1024 * 1024  # a single document larger than this is skipped
MAX_SITEMAP_URLS = 10_000
FETCH_CONCURRENCY = 8
AGENT = "parley-kb/0.2"


@dataclass(frozen=True, slots=True)
class RawDoc:
    source: str
    origin: str
    url: str
    collection: str
    fmt: str
    data: bytes
    web: bool = False  # fetched: ``url`` is the address it was fetched from (after redirects)

    def link(self, declared: str) -> str:
        """What a citation links to: a fetched page's own URL; for a file, the ``url`` its front matter (or
        canonical link) declares, else the bot's ``[kb] base_url`` + its path (files in the bot's own folder
        only); "" when no address is known (the title alone is cited, no made-up link)."""
        if self.web:
            return self.url
        return declared if declared.startswith(("https://", "http://")) else self.url

    @property
    def hash(self) -> str:
        digest = hashlib.blake2b(self.data, digest_size=16)
        digest.update(f"\x00{self.url}\x00{self.collection}".encode())  # a moved collection re-chunks too
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Skipped:
    source: str
    reason: str


@dataclass(frozen=True)
class Naming:
    """How local files are named, linked and filed."""

    base_dir: Path  # the bot's folder
    base_url: str = ""
    collection: str = ""  # forced (``--collection``)
    collections: tuple[tuple[str, str], ...] = ()  # (source prefix, collection), longest first

    def source(self, path: Path) -> str:
        path = path.resolve()
        try:
            return path.relative_to(self.base_dir.resolve()).as_posix()
        except ValueError:
            return path.as_posix()

    def source_of_target(self, target: str) -> str:
        """The ``origin`` a target's documents carry."""
        if target.startswith(("http://", "https://")):
            return target
        return self.source(self.resolve(target))

    def resolve(self, target: str) -> Path:
        root = Path(target)
        if not root.is_absolute() and not root.exists():
            root = self.base_dir / target
        return root

    def url(self, root: Path, path: Path) -> str:
        """``base_url`` + the path under the root, for files in the bot's own folder only: a folder elsewhere
        has no known address (its pages give one with a ``url`` front-matter field)."""
        if not self.base_url or not path.resolve().is_relative_to(self.base_dir.resolve()):
            return ""
        rel = path.resolve().relative_to(root.resolve()) if path != root else Path(path.name)
        stem = rel.with_suffix("").as_posix()
        stem = stem[: -len("index")].rstrip("/") if stem == "index" or stem.endswith("/index") else stem
        return self.base_url.rstrip("/") + "/" + stem

    def collection_of(self, root: Path, path: Path, source: str) -> str:
        if self.collection:
            return self.collection
        for prefix, name in self.collections:
            if source.startswith(prefix):
                return name
        rel = path.resolve().relative_to(root.resolve()) if path != root else Path(path.name)
        return rel.parts[0] if len(rel.parts) > 1 else "general"


def _walk(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in FORMATS and not p.name.startswith(".")
    )


def _read_local(target: str, naming: Naming) -> tuple[list[RawDoc], list[Skipped]]:
    root = naming.resolve(target)
    if not root.exists():
        raise SourceError(f"{target}: no such file or folder")
    origin = naming.source(root)
    docs: list[RawDoc] = []
    skipped: list[Skipped] = []
    for path in _walk(root):
        source = naming.source(path)
        fmt = format_of(path.name)
        if fmt is None:
            skipped.append(Skipped(source, "unsupported format"))
            continue
        try:
            if path.stat().st_size > MAX_BYTES:
                skipped.append(Skipped(source, "too large"))
                continue
            data = path.read_bytes()
        except OSError as exc:
            skipped.append(Skipped(source, f"unreadable ({exc.strerror})"))
            continue
        docs.append(
            RawDoc(
                source, origin, naming.url(root, path), naming.collection_of(root, path, source), fmt, data
            )
        )
    return docs, skipped


def _sitemap_urls(data: bytes) -> tuple[list[str], bool]:
    """(the <loc> URLs, whether they are further sitemaps)."""
    tree = LexborHTMLParser(data.decode("utf-8", errors="replace"))
    nested = tree.css_first("sitemapindex") is not None
    return [n.text(strip=True) for n in tree.css("loc") if n.text(strip=True)], nested


def _is_sitemap(url: str, data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    return url.endswith(".xml") or b"<urlset" in head or b"<sitemapindex" in head


@dataclass(frozen=True)
class FetchLimits:
    """What one URL or sitemap given to ingest may cost: pages, nested sitemap depth, bytes a document."""

    max_pages: int = MAX_SITEMAP_URLS
    depth: int = 3
    max_bytes: int = MAX_BYTES


async def _read_urls(
    target: str, naming: Naming, fetcher: GuardedFetcher, limits: FetchLimits
) -> tuple[list[RawDoc], list[Skipped]]:
    """One URL: a page, or a sitemap (index) whose every <loc> passes the guard; each URL is visited once,
    nested sitemaps are followed ``depth`` deep, and at most ``max_pages`` pages are fetched."""
    skipped: list[Skipped] = []
    collection = naming.collection or "general"
    try:
        first = await fetcher.get(target, max_bytes=limits.max_bytes)
    except FetchError as exc:
        raise SourceError(f"cannot fetch {exc}") from None
    if not _is_sitemap(target, first.data):
        fmt = format_of(first.url, first.content_type) or "html"
        return [RawDoc(target, target, first.url, collection, fmt, first.data, web=True)], []
    visited = {target, first.url}
    pages: list[str] = []
    queue: list[tuple[bytes, int]] = [(first.data, 0)]
    while queue and len(pages) < limits.max_pages:
        data, depth = queue.pop(0)
        urls, nested = _sitemap_urls(data)
        fresh = [u for u in dict.fromkeys(urls) if u not in visited]
        visited.update(fresh)
        if not nested:
            pages += fresh[: limits.max_pages - len(pages)]
            continue
        if depth >= limits.depth:
            why = f"sitemap nested deeper than {limits.depth} (kb.sitemap_depth)"
            skipped += [Skipped(u, why) for u in fresh]
            continue
        for sub in fresh:
            try:
                queue.append(((await fetcher.get(sub, max_bytes=limits.max_bytes)).data, depth + 1))
            except FetchError as exc:
                skipped.append(Skipped(sub, f"sitemap unreachable: {exc}"))
    if queue or len(pages) >= limits.max_pages:
        skipped.append(Skipped(target, f"stopped at {limits.max_pages} pages (kb.max_pages)"))
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(url: str) -> RawDoc | Skipped:
        async with gate:
            try:
                got = await fetcher.get(url, max_bytes=limits.max_bytes)
            except FetchError as exc:
                return Skipped(url, f"fetch failed: {exc}")
        fmt = format_of(got.url, got.content_type)
        if fmt is None:
            return Skipped(url, "unsupported format")
        return RawDoc(url, target, got.url, collection, fmt, got.data, web=True)

    docs: list[RawDoc] = []
    for item in await asyncio.gather(*(one(u) for u in pages)):
        if isinstance(item, RawDoc):
            docs.append(item)
        else:
            skipped.append(item)
    return docs, skipped


async def gather_sources(
    targets: Sequence[str],
    naming: Naming,
    policy: FetchPolicy | None = None,
    limits: FetchLimits | None = None,
) -> tuple[list[RawDoc], list[Skipped]]:
    """Every target's documents. URLs go through the fetch guard (``policy``: https only, no private
    addresses unless allowed, every redirect hop and sitemap <loc> checked)."""
    docs: list[RawDoc] = []
    skipped: list[Skipped] = []
    urls = [t for t in targets if t.startswith(("http://", "https://"))]
    for target in targets:
        if target not in urls:
            found, missed = await asyncio.to_thread(_read_local, target, naming)
            docs += found
            skipped += missed
    if urls:
        policy = policy or FetchPolicy(setting="[kb] fetch_allow")
        fetcher = GuardedFetcher(policy, timeout=60, user_agent=AGENT)
        try:
            for url in urls:
                found, missed = await _read_urls(url, naming, fetcher, limits or FetchLimits())
                docs += found
                skipped += missed
        finally:
            await fetcher.aclose()
    return docs, skipped
