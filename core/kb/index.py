"""One knowledge-base index: its chunks, the documents they came from, the BM25 and vector indexes.

An index is immutable once built; ``to_bytes``/``from_bytes`` make the artifact every replica loads (numpy's
npz, no pickle: arrays for BM25 and the vectors, stored as float16 to halve the size, and one JSON record for
the chunks, documents and vocabulary).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from core.kb.chunking import index_text
from core.kb.errors import IndexCorrupt
from core.kb.lexical import LexicalIndex
from core.kb.model import Chunk, DocumentEntry
from core.kb.vectors import FloatArray, VectorIndex, normalise, stack_sentences

FORMAT = 2  # 2: chunks carry their page context; the coverage calibration is stored


@dataclass
class KbIndex:
    chunks: list[Chunk]
    documents: dict[str, DocumentEntry]
    lexical: LexicalIndex
    vectors: VectorIndex | None = None
    embed_model: str = ""
    built_at: float = field(default_factory=time.time)
    version: int = 0
    collection_codes: np.ndarray[Any, np.dtype[np.int16]] = field(
        default_factory=lambda: np.zeros(0, dtype=np.int16)
    )
    collections: list[str] = field(default_factory=list)
    # The embedding model's own covered/not-covered line, measured on this corpus at ingest (calibrate.py).
    calibration: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.collections:
            self.collections = sorted({c.collection for c in self.chunks})
        codes = {name: i for i, name in enumerate(self.collections)}
        self.collection_codes = np.array([codes[c.collection] for c in self.chunks], dtype=np.int16)

    @property
    def size(self) -> int:
        return len(self.chunks)

    def mask(self, collections: Sequence[str]) -> np.ndarray[Any, np.dtype[np.bool_]] | None:
        """Chunks in any of ``collections`` (None: no restriction)."""
        if not collections:
            return None
        wanted = [i for i, name in enumerate(self.collections) if name in collections]
        return np.isin(self.collection_codes, wanted)

    # -- building

    @classmethod
    def build(
        cls,
        chunks: Sequence[Chunk],
        documents: dict[str, DocumentEntry],
        vectors: FloatArray | None = None,
        embed_model: str = "",
        calibration: dict[str, float] | None = None,
        heads: FloatArray | None = None,
        sentences: Sequence[FloatArray] | None = None,
    ) -> KbIndex:
        """``sentences``: per chunk, its sentences' vectors (vectors.py), in the order of ``chunks``."""
        numbered = [replace(c, id=i) for i, c in enumerate(chunks)]
        lexical = LexicalIndex.build([index_text(c) for c in numbered])
        vindex = None
        if vectors is not None and len(numbered):
            matrix = normalise(vectors)
            rows, starts = (
                stack_sentences(sentences, matrix.shape[1])
                if sentences is not None and len(sentences) == len(numbered)
                else (None, None)
            )
            vindex = VectorIndex(matrix, normalise(heads) if heads is not None else None, rows, starts)
        index = cls(numbered, documents, lexical, vindex, embed_model if vindex is not None else "")
        index.calibration = dict(calibration or {}) if vindex is not None else {}
        return index

    # -- the artifact

    def to_bytes(self) -> bytes:
        arrays, vocab = self.lexical.to_arrays()
        record = {
            "format": FORMAT,
            "embed_model": self.embed_model,
            "calibration": self.calibration,
            "built_at": self.built_at,
            "num_docs": int(arrays["num_docs"]),
            "vocab": vocab,
            "chunks": [
                [c.source, c.url, c.title, list(c.headings), c.text, c.hash, c.collection, c.context]
                for c in self.chunks
            ],
            "documents": [asdict(d) for d in self.documents.values()],
        }
        parts: dict[str, Any] = {
            "record": np.frombuffer(json.dumps(record, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
            "bm25_data": arrays["data"],
            "bm25_indices": arrays["indices"],
            "bm25_indptr": arrays["indptr"],
        }
        if self.vectors is not None:
            parts["vectors"] = self.vectors.matrix.astype(np.float16)
            if self.vectors.heads is not None:
                parts["head_vectors"] = self.vectors.heads.astype(np.float16)
            if self.vectors.sentences is not None and self.vectors.starts is not None:
                parts["sentence_vectors"] = self.vectors.sentences.astype(np.float16)
                parts["sentence_starts"] = self.vectors.starts.astype(np.int64)
        buf = io.BytesIO()
        np.savez_compressed(buf, **parts)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, version: int = 0) -> KbIndex:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                record = json.loads(npz["record"].tobytes().decode("utf-8"))
                arrays = {
                    "data": npz["bm25_data"],
                    "indices": npz["bm25_indices"],
                    "indptr": npz["bm25_indptr"],
                    "num_docs": int(record["num_docs"]),
                }
                vectors = npz["vectors"].astype(np.float32) if "vectors" in npz.files else None
                heads = npz["head_vectors"].astype(np.float32) if "head_vectors" in npz.files else None
                # Optional: an index from before sentence vectors still loads (chunk-level scores only).
                sentences = (
                    npz["sentence_vectors"].astype(np.float32) if "sentence_vectors" in npz.files else None
                )
                starts = npz["sentence_starts"].astype(np.int64) if "sentence_starts" in npz.files else None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise IndexCorrupt(f"cannot decode the index artifact: {type(exc).__name__}") from None
        if record.get("format") != FORMAT:
            raise IndexCorrupt(
                f"index artifact format {record.get('format')} (this version reads {FORMAT}): "
                "re-ingest with `parley kb ingest --rebuild`"
            )
        chunks = [
            Chunk(i, s, u, t, tuple(h), x, hs, col, ctx)
            for i, (s, u, t, h, x, hs, col, ctx) in enumerate(record["chunks"])
        ]
        documents = {d["source"]: DocumentEntry(**d) for d in record["documents"]}
        index = cls(
            chunks,
            documents,
            LexicalIndex(arrays, record["vocab"]),
            VectorIndex(vectors, heads, sentences, starts) if vectors is not None else None,
            record["embed_model"],
            record["built_at"],
            version,
        )
        index.calibration = {str(k): float(v) for k, v in record.get("calibration", {}).items()}
        return index

    def embeddings_by_hash(self) -> dict[str, tuple[FloatArray, FloatArray, FloatArray]]:
        """Reusable (text, heading, sentences) vectors for unchanged chunks on re-ingest (none from an index
        without sentence vectors: its chunks are embedded again, whole)."""
        v = self.vectors
        if v is None or v.heads is None or v.sentences is None:
            return {}
        out = {}
        for i, c in enumerate(self.chunks):
            rows = v.sentence_rows(i)
            if rows is not None:
                out[c.hash] = (v.matrix[i], v.heads[i], rows)
        return out
