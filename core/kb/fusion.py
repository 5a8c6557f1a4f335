"""Reciprocal rank fusion (Cormack et al. 2009): score(d) = sum over rankings of 1 / (k + rank(d)).
Rank-based, so BM25 scores and cosines need no common scale."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def top_k(scores: npt.NDArray[np.float32], k: int, mask: npt.NDArray[np.bool_] | None = None) -> list[int]:
    """Indices of the ``k`` best scores, best first (only where ``mask`` is true, and scores > 0 for BM25
    callers that pass a mask of positives)."""
    if mask is not None:
        scores = np.where(mask, scores, -np.inf).astype(np.float32)
    n = int(scores.shape[0])
    if n == 0 or k <= 0:
        return []
    k = min(k, n)
    part = np.argpartition(-scores, k - 1)[:k]
    ranked = part[np.argsort(-scores[part], kind="stable")]
    return [int(i) for i in ranked if np.isfinite(scores[i])]


def rrf(rankings: Sequence[Sequence[int]], k: int = 60) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, 1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))
