"""The model-comparison bench's MPNet pieces that need no weights (tests/bench/kb_models.py)."""

from __future__ import annotations

import numpy as np

from tests.bench.kb_models import relative_bucket


def test_relative_position_buckets_match_mpnets_rule() -> None:
    # relative position = key - query. Keys before the query use buckets 0-15, keys after it 16-31; the
    # first 8 distances are exact, then logarithmic up to 128, then the last bucket of each half.
    rel = np.array([0, -1, -7, -8, -12, -16, -127, -128, -500, 1, 7, 8, 128, 500], dtype=np.int64)
    expected = [0, 1, 7, 8, 9, 10, 15, 15, 15, 17, 23, 24, 31, 31]
    assert relative_bucket(rel).tolist() == expected
