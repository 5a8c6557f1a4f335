"""Each format parsed into titled sections; folders, files, URLs and sitemaps read as sources."""

from __future__ import annotations

import itertools
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web

from core.kb.chunking import Sizing, chunk_page
from core.kb.model import Page, Section
from core.kb.parsers import parse_html, parse_markdown, parse_pdf, parse_text
from core.kb.store import KbStore
from core.keys import KeySpace
from tests.kb.conftest import kb_cfg, run_ingest


def make_pdf(pages: list[str], title: str = "") -> bytes:
    """A minimal valid PDF (Helvetica text, one content stream per page), offsets computed."""
    objects: list[bytes] = []
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    font = 3 + 2 * len(pages)
    for i, text in enumerate(pages):
        content = 4 + 2 * i
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    info = len(objects) + 1
    objects.append(f"<< /Title ({title}) >>".encode())
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {info} 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF".encode()
    return bytes(out)


def test_markdown_sections_follow_headings_and_front_matter() -> None:
    data = (
        b'+++\ntitle = "Returns"\nurl = "https://example.com/r"\n+++\nIntro.\n# Returns\nBody.\n'
        b"## Steps\n```\n# not a heading\n```\n### Label\nPrint it.\n"
    )
    title, url, sections = parse_markdown(data)
    assert (title, url) == ("Returns", "https://example.com/r")
    assert [s.headings for s in sections] == [(), (), ("Steps",), ("Steps", "Label")]
    assert "# not a heading" in sections[2].text


def test_html_keeps_main_content_and_drops_boilerplate() -> None:
    html = b"""<html><head><title>Shipping | Example Co.</title>
    <link rel="canonical" href="https://example.com/help/shipping"></head><body>
    <header>Sign in | Basket</header><nav><a href="/">Home</a> Menu items</nav>
    <main><h1>Shipping times</h1><p>Standard takes 3 to 5 days.</p>
    <h2>Express</h2><ul><li>1 to 2 days</li><li><p>12 EUR</p></li></ul><script>track()</script></main>
    <aside>Related: gift cards</aside><footer>Copyright Example Co.</footer></body></html>"""
    title, url, sections = parse_html(html)
    assert title == "Shipping times"
    assert url == "https://example.com/help/shipping"
    text = " ".join(s.text for s in sections)
    assert "3 to 5 days" in text and "12 EUR" in text
    for boilerplate in ("Sign in", "Menu items", "Related", "Copyright", "track()"):
        assert boilerplate not in text
    assert sections[-1].headings == ("Express",)


def test_pdf_text_per_page() -> None:
    title, _, sections = parse_pdf(make_pdf(["Warranty lasts two years", "Claims need a photo"], "Warranty"))
    assert title == "Warranty"
    assert [s.headings for s in sections] == [("Page 1",), ("Page 2",)]
    assert "two years" in sections[0].text and "photo" in sections[1].text


def test_plain_text_title_is_first_line() -> None:
    title, _, sections = parse_text(b"Opening hours\n\nMonday to Friday, 08:00-18:00 CET.\n")
    assert title == "Opening hours"
    assert "Monday to Friday" in sections[0].text


def test_long_sections_split_with_overlap() -> None:
    text = " ".join(f"Sentence number {i} about refunds." for i in range(200))
    page = Page("p.md", "", "Refunds", (Section((), text),))
    chunks = [c.text for c in chunk_page(page, Sizing(target=100, overlap=20))]
    assert len(chunks) > 3
    assert all(len(c) <= 100 * 4 + 10 for c in chunks)
    # The start of each chunk repeats the end of the previous one.
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.split(". ")[0] in prev


async def test_every_format_ingested_from_a_folder(redis_client: aioredis.Redis, tmp_path: Path) -> None:
    root = tmp_path / "bot" / "kb"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# Markdown page\nAbout kettles.\n")
    (root / "docs" / "b.html").write_text(
        "<html><body><main><h1>HTML page</h1><p>About grinders.</p></main></body></html>"
    )
    (root / "docs" / "c.pdf").write_bytes(make_pdf(["About descaling"], "PDF page"))
    (root / "docs" / "d.txt").write_text("Text page\n\nAbout opening hours.\n")
    (root / "docs" / "e.pdf").write_bytes(b"%PDF-1.4 broken")
    report = await run_ingest(redis_client, tmp_path / "bot")
    assert report.pages == 5 and report.added == 5
    assert [(s, why.split(":")[0]) for s, why in report.skipped] == [("kb/docs/e.pdf", "unreadable PDF")]
    index = await KbStore(redis_client, KeySpace("testbot")).load()
    assert index is not None
    titles = {c.title for c in index.chunks}
    assert titles == {"Markdown page", "HTML page", "PDF page", "Text page"}
    urls = {c.url for c in index.chunks}
    assert "https://example.com/help/docs/a" in urls
    assert {c.collection for c in index.chunks} == {"docs"}


async def test_urls_and_sitemaps(redis_client: aioredis.Redis, tmp_path: Path) -> None:
    site = web.Application()
    pages = {
        "/help/returns": "<html><head><title>Returns</title></head><body><main><h1>Returns</h1>"
        "<p>30 days.</p></main></body></html>",
        "/help/shipping": "<html><body><article><h1>Shipping</h1><p>3 to 5 days.</p></article></body></html>",
    }

    async def page(request: web.Request) -> web.Response:
        if request.path not in pages:
            return web.Response(status=404)
        return web.Response(text=pages[request.path], content_type="text/html")

    async def sitemap(request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        locs = "".join(f"<url><loc>{base}{p}</loc></url>" for p in [*pages, "/help/gone"])
        body = f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>'
        return web.Response(text=body, content_type="application/xml")

    site.router.add_get("/sitemap.xml", sitemap)
    site.router.add_get("/help/{name}", page)
    runner = web.AppRunner(site)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        cfg = kb_cfg(fetch_allow=["127.0.0.1"], fetch_allow_http=True)  # the loopback fake, named
        report = await run_ingest(redis_client, tmp_path, [f"http://127.0.0.1:{port}/sitemap.xml"], cfg=cfg)
    finally:
        await runner.cleanup()
    assert report.pages == 2
    gone = f"http://127.0.0.1:{port}/help/gone"
    assert report.skipped == [(gone, f"fetch failed: {gone}: HTTP 404")]
    index = await KbStore(redis_client, KeySpace("testbot")).load()
    assert index is not None
    assert {c.url for c in index.chunks} == {
        f"http://127.0.0.1:{port}/help/returns",
        f"http://127.0.0.1:{port}/help/shipping",
    }
