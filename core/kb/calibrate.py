"""Coverage calibrated per model, from the model's own score distribution on the corpus (at ingest).

Cosine similarities mean different things for different models: MiniLM puts unrelated text near 0.1 and a
good answer near 0.5-0.7, text-embedding-3-small packs everything into 0.2-0.6. A fixed ``min_similarity``
is right for at most one of them. So at ingest we measure, for the model in use, how similar the corpus's
chunks are to chunks of *other* documents: a help centre's pages share a domain and a vocabulary, so "the best
match in a page that is not the answer" is the similarity an out-of-scope but on-topic question reaches.
The line for "covered" is set above the bulk of that distribution::

    null = for each sampled chunk, its highest cosine to any chunk of another document
    min_similarity = quantile(null, QUANTILE)

and stored with the index (``KbIndex.calibration``), so every replica uses the line that was measured for the
vectors it serves; a model change re-embeds and so re-calibrates. ``[kb] min_similarity`` overrides it.
QUANTILE was chosen on the sample help centre's two question sets (``make eval-kb``, README).
"""

from __future__ import annotations

import numpy as np

from core.kb.model import Chunk
from core.kb.vectors import FloatArray

QUANTILE = 0.25
SAMPLE = 2_000  # chunks sampled on a large corpus (the product is SAMPLE x N)
FLOOR, CEILING = 0.2, 0.8  # a tiny or odd corpus must not make everything (or nothing) covered
DEFAULT = 0.45  # a corpus too small to measure (fewer than 2 documents)


def calibrate(chunks: list[Chunk], vectors: FloatArray, seed: int = 0) -> dict[str, float]:
    sources = np.array([hash(c.source) for c in chunks], dtype=np.int64)
    if len(set(sources.tolist())) < 2:
        return {"min_similarity": DEFAULT, "quantile": QUANTILE, "sampled": 0.0}
    rng = np.random.default_rng(seed)
    rows = np.arange(len(chunks))
    if len(rows) > SAMPLE:
        rows = rng.choice(rows, SAMPLE, replace=False)
    sims = vectors[rows] @ vectors.T
    sims[sources[rows][:, None] == sources[None, :]] = -1.0  # the same document is not "another page"
    best = sims.max(axis=1)
    line = float(np.clip(np.quantile(best, QUANTILE), FLOOR, CEILING))
    return {
        "min_similarity": round(line, 4),
        "quantile": QUANTILE,
        "sampled": float(len(rows)),
        "null_median": round(float(np.median(best)), 4),
    }
