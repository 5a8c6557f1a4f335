"""Where documents come from: folders (walked), single files, URLs and sitemaps (fetched with aiohttp).

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

import aiohttp
from selectolax.lexbor import LexborHTMLParser

from core.kb.errors import SourceError
from core.kb.parsers import FORMATS, format_of

MAX_BYTES = 20 * 1024 * 1024  # a single document larger than this is skipped
MAX_SITEMAP_URLS = 10_000
FETCH_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class RawDoc:
    source: str
    origin: str
    url: str
    collection: str
    fmt: str
    data: bytes

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
        if not self.base_url:
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


async def _fetch(session: aiohttp.ClientSession, url: str) -> tuple[bytes, str]:
    async with session.get(url) as resp:
        if resp.status != 200:
            raise SourceError(f"HTTP {resp.status}")
        data = await resp.content.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise SourceError("too large")
        return data, resp.headers.get("Content-Type", "")


async def _read_urls(
    target: str, naming: Naming, session: aiohttp.ClientSession
) -> tuple[list[RawDoc], list[Skipped]]:
    docs: list[RawDoc] = []
    skipped: list[Skipped] = []
    collection = naming.collection or "general"
    try:
        data, ctype = await _fetch(session, target)
    except (aiohttp.ClientError, TimeoutError, SourceError) as exc:
        raise SourceError(f"{target}: cannot fetch ({exc.__class__.__name__}: {exc})") from None
    if not _is_sitemap(target, data):
        fmt = format_of(target, ctype) or "html"
        return [RawDoc(target, target, target, collection, fmt, data)], []
    pages: list[str] = []
    queue = [data]
    while queue and len(pages) < MAX_SITEMAP_URLS:
        urls, nested = _sitemap_urls(queue.pop())
        if not nested:
            pages += urls
            continue
        for sub in urls:
            try:
                queue.append((await _fetch(session, sub))[0])
            except (aiohttp.ClientError, TimeoutError, SourceError) as exc:
                skipped.append(Skipped(sub, f"sitemap unreachable ({type(exc).__name__})"))
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(url: str) -> RawDoc | Skipped:
        async with gate:
            try:
                body, ctype = await _fetch(session, url)
            except (aiohttp.ClientError, TimeoutError, SourceError) as exc:
                return Skipped(
                    url, f"fetch failed ({exc})" if isinstance(exc, SourceError) else "fetch failed"
                )
        fmt = format_of(url, ctype)
        if fmt is None:
            return Skipped(url, "unsupported format")
        return RawDoc(url, target, url, collection, fmt, body)

    for item in await asyncio.gather(*(one(u) for u in pages[:MAX_SITEMAP_URLS])):
        (docs if isinstance(item, RawDoc) else skipped).append(item)  # type: ignore[arg-type]
    return docs, skipped


async def gather_sources(targets: Sequence[str], naming: Naming) -> tuple[list[RawDoc], list[Skipped]]:
    docs: list[RawDoc] = []
    skipped: list[Skipped] = []
    urls = [t for t in targets if t.startswith(("http://", "https://"))]
    for target in targets:
        if target not in urls:
            found, missed = await asyncio.to_thread(_read_local, target, naming)
            docs += found
            skipped += missed
    if urls:
        timeout = aiohttp.ClientTimeout(total=60, connect=10)
        async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "parley-kb/0.1"}) as session:
            for url in urls:
                found, missed = await _read_urls(url, naming, session)
                docs += found
                skipped += missed
    return docs, skipped
