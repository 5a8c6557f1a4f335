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
from pathlib import PurePosixPath

from markdown_it import MarkdownIt
from pypdf import PdfReader
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


def parse_pdf(data: bytes) -> Parsed:
    try:
        reader = PdfReader(io.BytesIO(data))
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, OSError) as exc:
        raise ParseError(f"unreadable PDF: {type(exc).__name__}") from None
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
    "pdf": parse_pdf,
    "text": parse_text,
}


def parse(data: bytes, fmt: str) -> Parsed:
    return PARSERS[fmt](data)
