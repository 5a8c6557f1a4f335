"""The embedded model, token-sized chunking, citations from the real source, model changes: what a turn and an
ingest see with no embeddings server at all."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
import structlog

from core.kb.chunking import Sizing, chunk_page, index_text
from core.kb.embed import make_embedder, sizing
from core.kb.minilm import LocalEmbedder, MiniLM, shared_model
from core.kb.model import Page, Section
from core.kb.retrieve import KnowledgeBase
from core.kb.settings import load_embedding_settings
from core.kb.store import KbStore
from core.keys import KeySpace
from tests.conftest import make_settings
from tests.kb.conftest import kb_cfg, run_ingest, write_pages


@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    return shared_model()  # loaded once per process (about 90 MB)


def test_the_numpy_model_matches_sentence_transformers(minilm: MiniLM) -> None:
    # sentence-transformers' all-MiniLM-L6-v2 on this sentence (its model card's example), first 8 values:
    # mean pooling over the attention mask, then L2 normalisation.
    expected = [0.0676569, 0.0634959, 0.0487131, 0.0793050, 0.0374480, 0.0026528, 0.0393749, -0.0070985]
    vector = minilm.encode(["This is an example sentence"])[0]
    assert vector.shape == (384,)
    assert np.allclose(vector[:8], expected, atol=2e-5)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_paraphrases_score_high_and_unrelated_text_low(minilm: MiniLM) -> None:
    a, b, c = minilm.encode(
        [
            "my parcel never arrived, what now",
            "A parcel counts as lost when the tracking has not moved for 10 working days.",
            "Descale the coffee machine every two months with citric acid.",
        ]
    )
    assert float(a @ b) > 0.4 > float(a @ c) + 0.2
    # Batched and one at a time agree (padding takes no attention).
    alone = minilm.encode(["my parcel never arrived, what now"])[0]
    assert np.allclose(alone, a, atol=1e-5)


def test_no_embeddings_settings_means_the_embedded_model() -> None:
    settings = make_settings()
    embedder = make_embedder(settings, load_embedding_settings(_env_file=None))
    assert isinstance(embedder, LocalEmbedder)
    off = make_embedder(settings, load_embedding_settings(_env_file=None, embeddings_local=False))
    assert off is None


def test_chunks_never_pass_the_model_limit_and_tiny_sections_merge(minilm: MiniLM) -> None:
    long = " ".join(f"Refund rule number {i} applies to orders paid by card or PayPal." for i in range(300))
    page = Page(
        "p.md",
        "",
        "Refunds and returns " * 5,
        (
            Section((), "Intro line."),
            Section(("Overview",), "See below."),  # a heading with no facts: merged, not a chunk of its own
            Section(("Rules",), long),
            Section(("Rules", "Cards"), "x" * 5000),  # one enormous word
        ),
    )
    size = sizing(LocalEmbedder(), kb_cfg())
    chunks = list(chunk_page(page, size))
    assert len(chunks) > 5
    assert all(len(minilm.tokenizer.encode(index_text(c)).ids) <= 256 for c in chunks)
    assert "Intro line." in chunks[0].text and "See below." in chunks[0].text
    assert all(c.context == "Intro line." for c in chunks[1:])  # the page's opening rides along


def test_chunking_is_linear_on_one_huge_run() -> None:
    # 4 MB with no sentence end and few spaces: the old re-slicing was quadratic here.
    blob = ("a" * 999 + " ") * 4_000
    chunks = list(chunk_page(Page("big.txt", "", "Big", (Section((), blob),)), Sizing(target=200)))
    assert sum(len(c.text) for c in chunks) >= len(blob.split()) * 999


async def test_citations_come_from_the_real_source(redis_client: aioredis.Redis, tmp_path: Path) -> None:
    bot = tmp_path / "bot"
    write_pages(bot / "kb", {"a.md": "# Inside\nParcels take three days.\n"})
    write_pages(
        tmp_path / "elsewhere",
        {
            "b.md": "# Outside\nRefunds take five days.\n",
            "c.md": '+++\nurl = "https://help.example.org/warranty"\n+++\n# Warranty\nTwo years.\n',
        },
    )
    cfg = kb_cfg(sources=["kb", str(tmp_path / "elsewhere")])
    await run_ingest(redis_client, bot, ["kb", str(tmp_path / "elsewhere")], cfg=cfg)
    index = await KbStore(redis_client, KeySpace("testbot")).load()
    assert index is not None
    urls = {c.title: c.url for c in index.chunks}
    assert urls == {
        "Inside": "https://example.com/help/a",  # the bot's own folder: its base_url
        "Outside": "",  # a folder elsewhere has no known address: no made-up link
        "Warranty": "https://help.example.org/warranty",  # declared by the page
    }


async def test_a_model_change_without_reingest_is_detected_and_logged_once(
    redis_client: aioredis.Redis, help_centre: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await run_ingest(redis_client, help_centre.parent, embedder=LocalEmbedder())
    store = KbStore(redis_client, KeySpace("testbot"))
    index = await store.load()
    assert index is not None and index.embed_model == "all-MiniLM-L6-v2"
    assert 0.15 <= index.calibration["min_similarity"] <= 0.8  # measured on this corpus at ingest

    class Other(LocalEmbedder):
        model = "another-model"

    kb = KnowledgeBase(kb_cfg(), None, Other())
    kb.index = index
    with structlog.testing.capture_logs() as logs:
        first = await kb.retrieve("how long do refunds take?")
        await kb.retrieve("express shipping?")
    assert first.mode == "lexical" and first.hits
    mismatches = [e for e in logs if e["event"] == "kb_model_mismatch"]
    assert len(mismatches) == 1 and "parley kb ingest" in mismatches[0]["problem"]

    same = KnowledgeBase(kb_cfg(retrieve_deadline=30), None, LocalEmbedder())  # no timing in tests
    same.index = index
    trips: list[object] = []
    real = asyncio.to_thread

    async def counted(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        trips.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    result = await same.retrieve("my money has not come back after I sent the kettle back")
    assert result.mode == "hybrid" and result.hits[0].chunk.source == "kb/returns/refunds.md"
    assert len(trips) == 1  # the question's vector and the search: one worker-thread trip, not two


async def test_a_question_is_embedded_and_dropped_not_kept_in_the_vector_cache(
    redis_client: aioredis.Redis, help_centre: Path, tmp_path: Path
) -> None:
    """The knowledge base never stores user text: the disk cache keeps the help centre's vectors (keyed by
    the text's hash), never a question's (it was kept, and so a record of what was asked)."""
    embedder = LocalEmbedder(tmp_path / "vectors")
    await run_ingest(redis_client, help_centre.parent, embedder=embedder)
    kb = KnowledgeBase(kb_cfg(retrieve_deadline=30), None, embedder)  # no timing in tests
    kb.index = await KbStore(redis_client, KeySpace("testbot")).load()
    (db,) = (tmp_path / "vectors").glob("*.sqlite")
    with sqlite3.connect(db) as conn:
        (before,) = conn.execute("SELECT COUNT(*) FROM vectors").fetchone()
    question = "my money has not come back after I sent the kettle back"
    result = await kb.retrieve(question)
    assert result.mode == "hybrid" and result.hits
    with sqlite3.connect(db) as conn:
        (after,) = conn.execute("SELECT COUNT(*) FROM vectors").fetchone()
        asked = conn.execute(
            "SELECT COUNT(*) FROM vectors WHERE key = ?", (hashlib.sha256(question.encode()).digest(),)
        ).fetchone()
    assert before > 0 and after == before and asked == (0,)
