"""Documents -> :class:`Page` (title, sections under their heading paths), one function per format.

Markdown is parsed with markdown-it-py (headings inside code fences stay text), HTML with selectolax (main
content only: navigation, headers, footers, asides, scripts and forms are dropped), PDF with pypdf (a section
per page). Optional TOML front matter between ``+++`` lines in Markdown and text gives ``title``/``url``.
All of it is CPU work: callers run it in a thread.
"""

from __future__ import annotations

import io
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from markdown_it import MarkdownIt
from pypdf import PdfReader, apply_configuration
from pypdf.errors import PyPdfError
from selectolax.lexbor import LexborHTMLParser, LexborNode

from core.kb.model import Section

FORMATS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".txt": "text",
    ".text": "text",
}
_FRONT = re.compile(r"\A\+\+\+\s*\n(.*?)\n\+\+\+\s*\n", re.DOTALL)
_DROP = (
    "script,style,noscript,nav,header,footer,aside,form,svg,iframe,template,"
    "[role=navigation],[aria-hidden=true]"
)
_BLOCKS = "h1,h2,h3,h4,h5,h6,p,li,pre,blockquote,td,th,dt,dd,figcaption"
_SPACE = re.compile(r"[ \t\r\f\v]+")
_md = MarkdownIt("commonmark").enable("table")


class ParseError(Exception):
    """A document that cannot be read (reported as skipped, with the reason)."""


@dataclass(frozen=True)
class Limits:
    """What one document may cost: PDF pages, and bytes of extracted text (a PDF's decompressed streams may
    be 8 times that). A document over a limit is skipped with a message naming the setting."""

    max_pdf_pages: int = 500
    max_text_bytes: int = 2_000_000


def _over_text(size: int, limits: Limits) -> ParseError:
    return ParseError(
        f"over {limits.max_text_bytes} bytes of text ({size}+; raise [kb] max_text_bytes to read it)"
    )


Parsed = tuple[str, str, list[Section]]  # title, url from the document itself ("" if none), sections


def format_of(name: str, content_type: str = "") -> str | None:
    suffix = PurePosixPath(name.split("?")[0]).suffix.lower()
    if suffix in FORMATS:
        return FORMATS[suffix]
    ct = content_type.split(";")[0].strip().lower()
    return {
        "text/html": "html",
        "application/xhtml+xml": "html",
        "text/markdown": "markdown",
        "application/pdf": "pdf",
        "text/plain": "text",
    }.get(ct)


def _front_matter(text: str) -> tuple[dict[str, object], str]:
    m = _FRONT.match(text)
    if not m:
        return {}, text
    try:
        meta = tomllib.loads(m.group(1))
    except tomllib.TOMLDecodeError as exc:
        raise ParseError(f"bad front matter: {exc}") from None
    return meta, text[m.end() :]


def _clean(text: str) -> str:
    lines = [_SPACE.sub(" ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def parse_markdown(data: bytes) -> Parsed:
    meta, text = _front_matter(data.decode("utf-8", errors="replace"))
    lines = text.splitlines()
    tokens = _md.parse(text)
    heads: list[tuple[int, int, int, str]] = []  # (start line, end line, level, text)
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.map is not None:
            heads.append((tok.map[0], tok.map[1], int(tok.tag[1]), tokens[i + 1].content.strip()))
    title = str(meta.get("title", ""))
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    starts = [h[0] for h in heads] + [len(lines)]
    if (heads and heads[0][0] > 0) or not heads:
        intro = _clean("\n".join(lines[: starts[0]]))
        if intro:
            sections.append(Section((), intro))
    for n, (_, end, level, heading) in enumerate(heads):
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, heading))
        if level == 1 and not title:
            title = heading
        body = _clean("\n".join(lines[end : starts[n + 1]]))
        if body:
            sections.append(Section(tuple(h for lvl, h in path if not (lvl == 1 and h == title)), body))
    return title, str(meta.get("url", "")), sections


def _node_text(node: LexborNode) -> str:
    return _SPACE.sub(" ", node.text(separator=" ", strip=True)).strip()


def parse_html(data: bytes) -> Parsed:
    tree = LexborHTMLParser(data.decode("utf-8", errors="replace"))
    title_node = tree.css_first("title")
    title = _node_text(title_node) if title_node is not None else ""
    canonical = tree.css_first("link[rel=canonical]")
    url = (canonical.attributes.get("href") or "") if canonical is not None else ""
    for node in tree.css(_DROP):
        node.decompose()
    root = tree.css_first("main") or tree.css_first("article") or tree.css_first("[role=main]") or tree.body
    if root is None:
        return title, url, []
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    h1 = ""

    def close() -> None:
        text = "\n".join(body).strip()
        if text:
            sections.append(Section(tuple(h for _, h in path), text))
        body.clear()

    for node in root.css(_BLOCKS):
        tag = node.tag or ""
        if tag[0] == "h" and tag[1:].isdigit():
            close()
            level, text = int(tag[1]), _node_text(node)
            if level == 1 and not h1:
                h1 = text
                continue
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, text))
        elif len(node.css(_BLOCKS)) == 1:  # only itself: a leaf (an <li> of <p>s yields the <p>s)
            text = _node_text(node)
            if text:
                body.append(f"- {text}" if tag == "li" else text)
    close()
    # A site title ("Returns | Example Co.") reads worse than the page's own heading.
    return h1 or title, url, sections


def parse_pdf(data: bytes, limits: Limits = Limits()) -> Parsed:
    """Page by page, within the page limit, the extracted-bytes limit and a cap on every decompressed stream
    (a 67 KiB "bomb" that inflates to 70 MB stops at the cap, in well under a second)."""
    stream_cap = max(1_000_000, 8 * limits.max_text_bytes)
    pages: list[str] = []
    try:
        with apply_configuration(
            zlib_maximum_output_length=stream_cap,
            lzw_maximum_output_length=stream_cap,
            run_length_maximum_output_length=stream_cap,
            array_based_stream_maximum_output_length=stream_cap,
            stream_decoding_work_maximum_length=4 * stream_cap,
        ):
            reader = PdfReader(io.BytesIO(data))
            if len(reader.pages) > limits.max_pdf_pages:
                raise ParseError(
                    f"{len(reader.pages)} pages, over the limit of {limits.max_pdf_pages} "
                    "(raise [kb] max_pdf_pages to read it)"
                )
            meta_title = (reader.metadata.title if reader.metadata else None) or ""
            size = 0
            for page in reader.pages:
                text = page.extract_text() or ""
                size += len(text.encode("utf-8"))
                if size > limits.max_text_bytes:
                    raise _over_text(size, limits)
                pages.append(text)
    except (PyPdfError, ValueError, KeyError, OSError, RecursionError) as exc:
        what = "too large when decompressed" if "limit" in str(exc).lower() else type(exc).__name__
        raise ParseError(f"unreadable PDF: {what}") from None
    sections = [Section((f"Page {n}",), _clean(text)) for n, text in enumerate(pages, 1) if text.strip()]
    title = str(meta_title).strip()
    if not title and sections:
        title = sections[0].text.splitlines()[0][:120]
    return title, "", sections


def parse_text(data: bytes) -> Parsed:
    meta, text = _front_matter(data.decode("utf-8", errors="replace"))
    body = _clean(text)
    title = str(meta.get("title", "")) or (body.splitlines()[0][:120] if body else "")
    return title, str(meta.get("url", "")), [Section((), body)] if body else []


PARSERS: dict[str, Callable[[bytes], Parsed]] = {
    "markdown": parse_markdown,
    "html": parse_html,
    "text": parse_text,
}


def parse(data: bytes, fmt: str, limits: Limits = Limits()) -> Parsed:
    if fmt == "pdf":
        return parse_pdf(data, limits)
    if len(data) > 4 * limits.max_text_bytes:  # markup can be 4 times its text; more is not a help page
        raise _over_text(len(data), limits)
    title, url, sections = PARSERS[fmt](data)
    size = sum(len(s.text) for s in sections)
    if size > limits.max_text_bytes:
        raise _over_text(size, limits)
    return title, url, sections
