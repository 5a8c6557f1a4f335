"""Sentence vectors (core/kb/vectors.py): which lines are embedded, how they refine the candidates' scores,
that they survive the artifact and re-ingest (and an index from before them is upgraded), the fusion's rule
for the lexical list's first hit, and the one BLAS thread of a serving process."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
from threadpoolctl import threadpool_info

from core.kb.chunking import sentence_texts
from core.kb.fusion import fuse
from core.kb.index import KbIndex
from core.kb.model import Chunk, DocumentEntry
from core.kb.retrieve import KnowledgeBase
from core.kb.store import KbStore
from core.kb.vectors import SENTENCE_SHARE, VectorIndex, stack_sentences
from core.keys import KeySpace
from tests.fakes.openai_server import FakeOpenAI
from tests.kb.conftest import fake_embedder, kb_cfg, run_ingest


def _chunk(text: str, i: int = 0) -> Chunk:
    return Chunk(i, f"kb/p{i}.md", "", f"Page {i}", (), text, f"h{i}")


def test_sentences_are_split_at_ends_and_lines_and_fragments_dropped() -> None:
    text = "We accept Visa and Mastercard. Cards are charged on shipping!\n- PayPal works everywhere\nNote:\n"
    assert sentence_texts(_chunk(text)) == [
        "We accept Visa and Mastercard.",
        "Cards are charged on shipping!",
        "PayPal works everywhere",
    ]


def _unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def _three_chunks() -> VectorIndex:
    matrix = np.stack([_unit(1, 0, 0), _unit(1, 1, 0), _unit(0, 0, 1)])
    rows, starts = stack_sentences(
        [np.stack([_unit(0, 1, 0)]), np.stack([_unit(0, 1, 0)]), np.zeros((0, 3))], 3
    )
    return VectorIndex(matrix, None, rows, starts)


def test_a_candidate_scores_the_mean_of_its_chunk_and_its_best_sentence() -> None:
    index = _three_chunks()
    q = _unit(0, 1, 0)
    plain = index.matrix @ q
    sims = index.similarities(q, refine=3)
    assert np.isclose(sims[1], (1 - SENTENCE_SHARE) * plain[1] + SENTENCE_SHARE * 1.0)  # its sentence is q
    assert np.isclose(sims[0], (1 - SENTENCE_SHARE) * plain[0] + SENTENCE_SHARE * 1.0)
    assert np.isclose(sims[2], plain[2])  # no sentences: the chunk score alone
    only_best = index.similarities(q, refine=1)
    assert np.isclose(only_best[1], sims[1]) and np.isclose(only_best[0], plain[0])  # not a candidate
    masked = index.similarities(q, refine=1, mask=np.array([True, False, True]))
    assert np.isclose(masked[0], sims[0]) and np.isclose(masked[1], plain[1])  # out of scope: not refined
    worse = index.similarities(_unit(1, 0, 0), refine=3)
    assert np.isclose(worse[0], 1.0)  # a sentence worse than the chunk never lowers it


def test_the_artifact_keeps_sentence_vectors_and_an_older_one_still_loads() -> None:
    chunks = [_chunk("One fact here. Another fact there.", i) for i in range(2)]
    docs = {c.source: DocumentEntry(c.source, "kb", c.hash, 1) for c in chunks}
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(2, 8)).astype(np.float32)
    sentences = [rng.normal(size=(2, 8)).astype(np.float32), rng.normal(size=(1, 8)).astype(np.float32)]
    index = KbIndex.build(chunks, docs, vectors, "m", heads=vectors, sentences=sentences)
    loaded = KbIndex.from_bytes(index.to_bytes(), 1)
    assert loaded.vectors is not None and loaded.vectors.sentences is not None
    assert loaded.vectors.starts is not None and loaded.vectors.starts.tolist() == [0, 2, 3]
    assert np.allclose(loaded.vectors.sentences, index.vectors.sentences, atol=1e-3)  # type: ignore[union-attr]
    assert set(loaded.embeddings_by_hash()) == {"h0", "h1"}

    with np.load(io.BytesIO(index.to_bytes())) as npz:  # an artifact from before sentence vectors
        parts = {k: npz[k] for k in npz.files if not k.startswith("sentence_")}
    buf = io.BytesIO()
    np.savez_compressed(buf, **parts)
    old = KbIndex.from_bytes(buf.getvalue(), 1)
    assert old.vectors is not None and old.vectors.sentences is None
    assert old.vectors.similarities(vectors[0]).shape == (2,)
    assert old.embeddings_by_hash() == {}  # nothing to reuse: its chunks are embedded again, with sentences


async def test_reingest_adds_sentence_vectors_to_an_index_from_before_them(
    redis_client: aioredis.Redis, help_centre: Path, fake_openai: FakeOpenAI
) -> None:
    embedder = fake_embedder(fake_openai)
    store = KbStore(redis_client, KeySpace("testbot"))
    try:
        first = await run_ingest(redis_client, help_centre.parent, embedder=embedder)
        index = await store.load()
        assert index is not None and index.vectors is not None and index.vectors.sentences is not None
        assert index.vectors.starts is not None and index.vectors.starts[-1] >= first.chunks
        # The same index without its sentence vectors, as an older version published it.
        plain = KbIndex.build(
            index.chunks, index.documents, index.vectors.matrix, index.embed_model, heads=index.vectors.heads
        )
        await store.publish(plain, "")
        again = await run_ingest(redis_client, help_centre.parent, embedder=embedder)
    finally:
        await embedder.aclose()
    assert again.version == first.version + 2 and again.embedded == first.chunks  # not "index unchanged"
    upgraded = await store.load()
    assert upgraded is not None and upgraded.vectors is not None and upgraded.vectors.sentences is not None


def test_the_lexical_first_is_kept_in_the_top_only_when_it_is_strong() -> None:
    n = 8
    sims = np.linspace(0.9, 0.2, n).astype(np.float32)  # the vectors rank 0..7
    vec_rank = list(range(n))
    weak = np.zeros(n, dtype=np.float32)
    weak[7] = 1.0  # one common word in the vectors' last chunk: BM25 1, under the saturation (10)
    fused = fuse([7], weak, vec_rank, sims, 0.8, 10.0, 5)
    assert [i for i, _ in fused[:5]] == [0, 1, 2, 3, 4]
    strong = weak.copy()
    strong[7] = 12.0  # the question names the page's terms
    fused = fuse([7], strong, vec_rank, sims, 0.8, 10.0, 5)
    assert 7 in [i for i, _ in fused[:5]]


async def test_a_serving_knowledge_base_runs_blas_on_one_thread() -> None:
    async with KnowledgeBase(kb_cfg(), None):
        assert {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"} == {1}
