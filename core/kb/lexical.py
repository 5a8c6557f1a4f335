"""The lexical retriever: BM25 (bm25s, scores precomputed into a sparse matrix at index time, so a query is a
few column sums) over Snowball-stemmed words (PyStemmer), plus an idf-weighted "coverage" of the question
that decides, together with the vector similarity, whether the knowledge base covers a question at all."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import bm25s
import numpy as np
import numpy.typing as npt
import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
_STOP = frozenset(STOPWORDS_EN_PLUS) | {
    *("i", "my", "me", "you", "your", "can", "do", "does", "how", "what", "get", "want", "need", "please"),
    *("hi", "hello", "thanks", "would", "could", "should", "there", "when", "where", "why", "which", "who"),
}
_stemmer = Stemmer.Stemmer("english")

FloatArray = npt.NDArray[np.float32]


def tokenize(text: str) -> list[str]:
    words = [w.replace("’", "'") for w in _WORD.findall(text.lower())]
    return list(_stemmer.stemWords([w for w in words if w not in _STOP]))


class LexicalIndex:
    def __init__(
        self, arrays: dict[str, Any], vocab: Sequence[str], k1: float = 1.5, b: float = 0.75
    ) -> None:
        self._bm25 = bm25s.BM25(k1=k1, b=b)
        self._bm25.scores = arrays
        self._bm25.vocab_dict = {token: i for i, token in enumerate(vocab)}
        self._bm25.nonoccurrence_array = None  # only BM25L/BM25+ have one; "lucene" (the default) does not
        self._vocab = list(vocab)
        self.size = int(arrays["num_docs"])
        indptr = arrays["indptr"]
        df = np.diff(indptr).astype(np.float64)
        self._idf = np.log1p((self.size - df + 0.5) / (df + 0.5))
        self._unknown_idf = math.log1p((self.size + 0.5) / 0.5)
        # bm25s writes each word's documents in ascending order; checked once, so a membership test is a
        # binary search (np.isin hashes the whole posting list: 3 ms a question at 10,000 chunks).
        indices = arrays["indices"]
        steps = np.diff(indices) > 0
        starts = indptr[1:-1]
        steps[starts[(starts > 0) & (starts < len(indices))] - 1] = True  # a new word may start lower
        self._sorted = bool(steps.all())

    @classmethod
    def build(cls, texts: Sequence[str]) -> LexicalIndex:
        bm25 = bm25s.BM25()
        # An empty document would give bm25s an empty vocabulary; a sentinel token keeps shapes right.
        bm25.index([tokenize(t) or ["\x00"] for t in texts] or [["\x00"]], show_progress=False)
        vocab = [""] * len(bm25.vocab_dict)
        for token, i in bm25.vocab_dict.items():
            vocab[i] = token
        arrays = dict(bm25.scores)
        arrays["num_docs"] = len(texts)
        return cls(arrays, vocab)

    def to_arrays(self) -> tuple[dict[str, Any], list[str]]:
        return dict(self._bm25.scores), self._vocab

    def _ids(self, tokens: Sequence[str]) -> list[int]:
        vocab = self._bm25.vocab_dict
        return sorted({vocab[t] for t in tokens if t in vocab})

    def scores(self, tokens: Sequence[str]) -> FloatArray:
        ids = self._ids(tokens)
        if not ids or not self.size:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores_from_ids(ids), dtype=np.float32)[: self.size]

    def coverage(self, tokens: Sequence[str], doc_ids: Sequence[int]) -> list[float]:
        """Per document, the idf-weighted share of the question's distinct words it contains (0-1). Words the
        corpus never uses weigh most: a question about something absent scores low everywhere."""
        vocab = self._bm25.vocab_dict
        distinct = list(dict.fromkeys(tokens))
        if not distinct:
            return [0.0] * len(doc_ids)
        weights = [float(self._idf[vocab[t]]) if t in vocab else self._unknown_idf for t in distinct]
        total = sum(weights) or 1.0
        arrays = self._bm25.scores
        indptr, indices = arrays["indptr"], arrays["indices"]
        postings = {t: indices[indptr[vocab[t]] : indptr[vocab[t] + 1]] for t in distinct if t in vocab}
        out = []
        docs = np.asarray(doc_ids, dtype=np.int64)
        present = {t: _member(docs, p, self._sorted) for t, p in postings.items()}
        for n in range(len(doc_ids)):
            got = sum(w for t, w in zip(distinct, weights, strict=True) if t in present and present[t][n])
            out.append(got / total)
        return out


def _member(docs: npt.NDArray[np.int64], posting: npt.NDArray[Any], ascending: bool) -> npt.NDArray[np.bool_]:
    """Which of ``docs`` are in ``posting`` (one word's documents)."""
    if not ascending or not len(posting):
        return np.isin(docs, posting)
    at = np.minimum(np.searchsorted(posting, docs), len(posting) - 1)
    found: npt.NDArray[np.bool_] = posting[at] == docs
    return found
