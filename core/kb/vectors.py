"""The vector retriever: unit-normalised embeddings in float32 matrices; a query is a matrix-vector product
(BLAS) and an ``argpartition``. Exact search over 10,000 x 384 floats takes a few milliseconds, so an
approximate index (usearch, hnswlib) would add a dependency and recall loss for nothing at help-centre sizes.

Each chunk has two vectors: its whole text (title, headings, context, text) and its "heading" alone (page
title and heading path, which read like the question the section answers). A chunk scores the better of the
two: customers' questions are short and match a heading better than a 200-token passage, while a question
about a detail matches the passage (measured on the sample help centre: hit@5 0.844 -> 0.875 on the
customer-worded set, no loss on the other).

Each chunk's sentences have a vector too (``sentences``, rows grouped by chunk, ``starts`` the offsets): a
customer who asks about one fact ("do you take amex") matches the sentence that states it better than the
passage around it. The best ``refine`` chunks of a question (the candidates) then score the mean of their
chunk score and the better of that and their best sentence's: one sentence alone would let a chunk win on a
single loose line (measured: it makes more out-of-scope questions look covered), while the mean keeps the
passage's say. Only the candidates are refined, so a query reads a few hundred sentence rows, not all of
them. ``SENTENCE_SHARE`` is the plain mean, not tuned: README "Knowledge base" has the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

SENTENCE_SHARE = 0.5  # a refined chunk's score: (1 - share) * chunk + share * max(chunk, best sentence)
REFINE = 50  # chunks refined with their sentences when the caller names no number


def normalise(rows: Sequence[Sequence[float]] | Sequence[float] | FloatArray) -> FloatArray:
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: FloatArray = (matrix / norms).astype(np.float32, copy=False)
    return out


class VectorIndex:
    def __init__(
        self,
        matrix: FloatArray,
        heads: FloatArray | None = None,
        sentences: FloatArray | None = None,
        starts: IntArray | None = None,
    ) -> None:
        self.matrix = matrix  # (chunks, dims), rows of unit length
        self.heads = heads if heads is not None and heads.shape == matrix.shape else None
        ok = (
            sentences is not None
            and starts is not None
            and sentences.ndim == 2
            and sentences.shape[1] == matrix.shape[1]
            and starts.shape == (matrix.shape[0] + 1,)
            and int(starts[-1]) == sentences.shape[0]
        )
        self.sentences = sentences if ok else None  # (all sentences, dims), grouped by chunk
        self.starts = np.asarray(starts, dtype=np.int64) if ok and starts is not None else None

    @property
    def dims(self) -> int:
        return int(self.matrix.shape[1]) if self.matrix.ndim == 2 else 0

    def similarities(
        self, query: Sequence[float] | FloatArray, refine: int = REFINE, mask: Any = None
    ) -> FloatArray:
        """Every chunk's score for ``query``; the best ``refine`` (within ``mask``) refined by sentence."""
        q = normalise(query)[0]
        if q.shape[0] != self.dims:
            raise ValueError(f"query has {q.shape[0]} dimensions, the index {self.dims}")
        sims = np.asarray(self.matrix @ q, dtype=np.float32)
        if self.heads is not None:
            np.maximum(sims, self.heads @ q, out=sims)
        self.refine(sims, q, refine, mask)
        return sims

    def refine(self, sims: FloatArray, q: FloatArray, k: int, mask: Any = None) -> None:
        """In place: the ``k`` best chunks (within ``mask``) take their sentences into account."""
        if self.sentences is None or self.starts is None or k <= 0 or not sims.shape[0]:
            return
        pick = np.where(mask, sims, -np.inf) if mask is not None else sims
        k = min(k, int(sims.shape[0]))
        ids = np.argpartition(-pick, k - 1)[:k]
        ids = ids[np.isfinite(pick[ids])]
        first, end = self.starts[ids], self.starts[ids + 1]
        has = end > first
        ids, first, lengths = ids[has], first[has], (end - first)[has]
        if not ids.shape[0]:
            return
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        rows = np.repeat(first - offsets, lengths) + np.arange(int(lengths.sum()))
        best = np.maximum.reduceat(self.sentences[rows] @ q, offsets)
        base = sims[ids]
        sims[ids] = (1.0 - SENTENCE_SHARE) * base + SENTENCE_SHARE * np.maximum(base, best)

    def sentence_rows(self, chunk: int) -> FloatArray | None:
        """One chunk's sentence vectors (for reuse on re-ingest), or None when the index has none."""
        if self.sentences is None or self.starts is None:
            return None
        return self.sentences[int(self.starts[chunk]) : int(self.starts[chunk + 1])]


def stack_sentences(per_chunk: Sequence[FloatArray], dims: int) -> tuple[FloatArray, IntArray]:
    """Per-chunk sentence vectors -> one normalised matrix and the chunk offsets into it."""
    lengths = np.array([len(rows) for rows in per_chunk], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    filled = [np.asarray(rows, dtype=np.float32).reshape(-1, dims) for rows in per_chunk]
    matrix = np.concatenate(filled) if filled else np.zeros((0, dims), dtype=np.float32)
    return (normalise(matrix) if matrix.shape[0] else matrix.astype(np.float32)), starts
