"""Fusing the lexical and the vector ranking into one.

Chosen on measurements (``make eval-kb``, both question sets; README "Knowledge base"): a convex combination
of the two scores, each normalised by its best candidate for this question::

    score(d) = w * cos(d) / max cos + (1 - w) * bm25(d) / (bm25(d) + K)
    (w = [kb] vector_weight, K = [kb] lexical_saturation)

BM25 is saturated rather than divided by the question's best BM25: a question that shares one common word
with the help centre (customers' wording) then adds little, while a question that names the page's terms
adds up to ``1 - w``. Unlike reciprocal rank fusion at k=60, where a chunk ranked first by one list alone
(1/61) loses to any chunk in the middle of both lists (2/110), the vector list's best scores at least ``w``;
and each list's first hit is kept within the top ``keep`` whatever the sum says. Measured on both question
sets (README "Knowledge base"): w = 0.8, K = 10 match or beat vector-only and lexical-only on hit@5 on both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


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
    return [int(i) for i in ranked[np.isfinite(scores[ranked])]]


def fuse(
    lex_rank: Sequence[int],
    lex_scores: FloatArray,
    vec_rank: Sequence[int],
    sims: FloatArray | None,
    weight: float,
    saturation: float,
    keep: int,
) -> list[tuple[int, float]]:
    """The candidates of both lists by the convex combination, best first (lexical order alone without
    vectors); each list's first hit is always within the first ``keep``."""
    if sims is None or not vec_rank:
        return [(i, _saturate(float(lex_scores[i]), saturation)) for i in lex_rank]
    ids = np.fromiter(dict.fromkeys([*vec_rank, *lex_rank]), dtype=np.int64)
    lex = lex_scores[ids].astype(np.float64)
    cos = np.maximum(sims[ids].astype(np.float64), 0.0)
    cos_top = float(cos.max()) or 1.0
    score = weight * cos / cos_top + (1.0 - weight) * lex / (lex + saturation)
    order = [int(n) for n in np.argsort(-score, kind="stable")]
    fused = [(int(ids[n]), float(score[n])) for n in order]
    # The lexical first is kept only when it is strong (BM25 at least ``saturation``, the score that counts
    # half): a question that shares one common word with a page must not push the vectors' fifth out.
    lex_first = lex_rank[0] if lex_rank and float(lex_scores[lex_rank[0]]) >= saturation else -1
    firsts = [(vec_rank[0], weight), (lex_first, 1.0 - weight)]
    for first in (i for i, share in firsts if share > 0 and i >= 0):  # a list weighted 0 is not fused
        at = next((n for n, (i, _) in enumerate(fused) if i == first), None)
        if at is not None and at >= keep > 0:  # a strong single list's best survives the cut
            fused.insert(keep - 1, fused.pop(at))
    return fused


def _saturate(score: float, saturation: float) -> float:
    return score / (score + saturation) if score > 0 else 0.0
