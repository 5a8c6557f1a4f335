"""The vector retriever: unit-normalised embeddings in one float32 matrix; a query is one matrix-vector
product (BLAS) and an ``argpartition``. Exact search over 10,000 x 1,536 floats takes a few milliseconds on
one core, inside the retrieval target, so an approximate index (usearch, hnswlib) would add a dependency and
recall loss for nothing at help-centre sizes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def normalise(rows: Sequence[Sequence[float]] | Sequence[float] | FloatArray) -> FloatArray:
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: FloatArray = (matrix / norms).astype(np.float32, copy=False)
    return out


class VectorIndex:
    def __init__(self, matrix: FloatArray) -> None:
        self.matrix = matrix  # (chunks, dims), rows of unit length

    @property
    def dims(self) -> int:
        return int(self.matrix.shape[1]) if self.matrix.ndim == 2 else 0

    def similarities(self, query: Sequence[float]) -> FloatArray:
        q = normalise(query)[0]
        if q.shape[0] != self.dims:
            raise ValueError(f"query has {q.shape[0]} dimensions, the index {self.dims}")
        return np.asarray(self.matrix @ q, dtype=np.float32)
