"""Coverage calibrated per model, from the model's own score distribution on the corpus (at ingest).

Cosine similarities mean different things for different models: MiniLM puts unrelated text near 0.1 and a
good answer near 0.5-0.7, text-embedding-3-small packs everything into 0.2-0.6. A fixed ``min_similarity``
is right for at most one of them. So at ingest we measure, for the model in use, how similar a short,
question-like text is to pages that do *not* answer it: each page's heading vector (its title, see
vectors.py) against every chunk of the *other* pages, scored as retrieval scores them (the best chunk
vector, the candidates refined by their sentences). A help centre's pages
share a domain and a vocabulary, so "the best match among pages that are not the answer" is what an on-topic
question the help centre does not cover reaches. The line::

    null = for each page, the best similarity of its title to any chunk of another page
    min_similarity = quantile(null, QUANTILE)

is stored with the index (``KbIndex.calibration``), so every replica uses the line measured for the vectors
it serves; a model change re-embeds and so re-calibrates. ``[kb] min_similarity`` overrides it. QUANTILE was
chosen on the sample help centre's two question sets (``make eval-kb --sweep``; figures in the README).
"""

from __future__ import annotations

import numpy as np

from core.kb.model import Chunk
from core.kb.vectors import REFINE, VectorIndex

QUANTILE = 0.1
SAMPLE = 2_000  # pages sampled on a large corpus (the product is SAMPLE x chunks)
FLOOR, CEILING = 0.15, 0.8  # a tiny or odd corpus must not make everything (or nothing) covered
DEFAULT = 0.4  # a corpus too small to measure (fewer than 3 documents)


def calibrate(chunks: list[Chunk], vectors: VectorIndex, seed: int = 0) -> dict[str, float]:
    sources = [c.source for c in chunks]
    first: dict[str, int] = {}
    for i, source in enumerate(sources):
        first.setdefault(source, i)
    heads = vectors.heads if vectors.heads is not None else vectors.matrix
    if len(first) < 3:
        return {"min_similarity": DEFAULT, "quantile": QUANTILE, "pages": float(len(first))}
    codes = {s: n for n, s in enumerate(first)}
    owner = np.array([codes[s] for s in sources])
    pages = np.array(list(first.values()))
    if len(pages) > SAMPLE:
        pages = np.random.default_rng(seed).choice(pages, SAMPLE, replace=False)
    probes = heads[pages]
    sims = probes @ vectors.matrix.T
    if vectors.heads is not None:
        np.maximum(sims, probes @ vectors.heads.T, out=sims)
    sims[owner[pages][:, None] == owner[None, :]] = -1.0  # the page itself is not "another page"
    for row, probe, page in zip(sims, probes, pages, strict=True):  # as retrieval: candidates' sentences
        vectors.refine(row, probe, REFINE, owner != owner[page])
    best = sims.max(axis=1)
    line = float(np.clip(np.quantile(best, QUANTILE), FLOOR, CEILING))
    return {
        "min_similarity": round(line, 4),
        "quantile": QUANTILE,
        "pages": float(len(pages)),
        "null_median": round(float(np.median(best)), 4),
    }
