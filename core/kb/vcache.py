"""The embedded model's vectors, kept on disk by text: a rebuild, a re-ingest after an upgrade or another
`parley test` run embeds only text it has not seen (the sample help centre costs ~15 s of CPU to embed; a
cache hit costs a SQLite lookup).

One SQLite file per model identity (name + package version), shared by the processes on a host (WAL, short
transactions). Keys are SHA-256 of the text, values float32 bytes. Bounded: past ``max_rows`` the oldest rows
go. Runs in the embedder's worker thread: one connection per call, nothing shared between threads.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
MAX_ROWS = 200_000  # ~300 MB at 384 dimensions


class VectorCache:
    def __init__(self, path: Path, dims: int, *, max_rows: int = MAX_ROWS) -> None:
        self.path = path
        self.dims = dims
        self.max_rows = max_rows
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:  # once per process, not on every lookup
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        if not self._ready:
            db.execute("PRAGMA journal_mode=WAL")  # kept by the file
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")
            self._ready = True
        return db

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    def get(self, texts: Sequence[str]) -> dict[int, F32]:
        """Row index -> vector for the texts already cached."""
        keys = [self._key(t) for t in texts]
        found: dict[bytes, F32] = {}
        with closing(self._connect()) as db:
            for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
                part = keys[start : start + 500]
                marks = ",".join("?" * len(part))
                for key, blob in db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", part):  # noqa: S608
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (self.dims,):
                        found[key] = vector
        return {i: found[k] for i, k in enumerate(keys) if k in found}

    def put(self, texts: Sequence[str], vectors: F32) -> None:
        rows = [(self._key(t), v.astype(np.float32).tobytes()) for t, v in zip(texts, vectors, strict=True)]
        if not rows:
            return
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR IGNORE INTO vectors (key, vector) VALUES (?, ?)", rows)
            (last,) = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM vectors").fetchone()
            if last > self.max_rows:
                db.execute("DELETE FROM vectors WHERE rowid <= ?", (last - self.max_rows,))
            db.execute("COMMIT")
