"""The embedded model's vector cache: a hit is read back instead of embedded, a broken cache costs speed and
never an answer, the file is bounded, and the setting decides where it lives."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import structlog

from core.kb.minilm import LocalEmbedder, available
from core.kb.settings import EmbeddingSettings
from core.kb.vcache import VectorCache
from tests.conftest import make_settings

pytestmark = pytest.mark.skipif(not available(), reason="the local-embeddings extra is not installed")


async def test_a_cached_text_is_read_back_not_embedded(tmp_path: Path) -> None:
    texts = ["Refunds take five working days.", "Express delivery costs extra."]
    plain = np.array(await LocalEmbedder().embed(texts), dtype=np.float32)
    cached = LocalEmbedder(tmp_path)
    assert np.array_equal(np.array(await cached.embed(texts), dtype=np.float32), plain)
    (db,) = await asyncio.to_thread(lambda: list(tmp_path.glob("all-MiniLM-L6-v2-*.sqlite")))
    # Mark the stored vector of the first text: a second call must return the mark (it did not embed again),
    # and embed only the text it has not seen.
    cache = VectorCache(db, LocalEmbedder.dims)
    marked = np.full((1, LocalEmbedder.dims), 0.5, dtype=np.float32)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM vectors")
    cache.put(texts[:1], marked)
    again = np.array(await cached.embed([*texts, "Where is my parcel?"]), dtype=np.float32)
    assert np.array_equal(again[0], marked[0])
    assert np.allclose(again[1], plain[1], atol=1e-6)
    assert len(cache.get([*texts, "Where is my parcel?"])) == 3


async def test_a_broken_cache_still_embeds_and_says_so_once(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    embedder = LocalEmbedder(blocker)  # the cache file cannot be created under a file
    with structlog.testing.capture_logs() as logs:
        first = await embedder.embed(["Refunds take five working days."])
        second = await embedder.embed(["Express delivery costs extra."])
    assert len(first[0]) == len(second[0]) == LocalEmbedder.dims
    assert [e["event"] for e in logs if e["event"] == "kb_vector_cache_off"] == ["kb_vector_cache_off"]


def test_the_cache_keeps_at_most_max_rows(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path / "v.sqlite", 4, max_rows=3)
    for i in range(5):
        cache.put([f"text {i}"], np.full((1, 4), i, dtype=np.float32))
    kept = cache.get([f"text {i}" for i in range(5)])
    assert sorted(kept) == [2, 3, 4]  # the oldest went
    assert kept[4].tolist() == [4.0] * 4


def test_the_setting_places_or_turns_off_the_cache(tmp_path: Path) -> None:
    settings = make_settings(parley_data_dir=tmp_path / "data")
    assert (
        EmbeddingSettings(_env_file=None, embeddings_cache_dir="").cache_dir(settings)
        == tmp_path / "data" / "embeddings"
    )  # type: ignore[call-arg]
    assert EmbeddingSettings(_env_file=None, embeddings_cache_dir="off").cache_dir(settings) is None  # type: ignore[call-arg]
    elsewhere = tmp_path / "vectors"
    assert (
        EmbeddingSettings(_env_file=None, embeddings_cache_dir=str(elsewhere)).cache_dir(settings)
        == elsewhere
    )  # type: ignore[call-arg]
