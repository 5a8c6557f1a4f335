"""Knowledge-base errors::

ParleyError
└── KbError
    ├── EmbeddingError   the /v1/embeddings endpoint failed (retrieval falls back to lexical-only)
    ├── SourceError      a path or URL given to ingest cannot be read at all
    └── IndexCorrupt     a stored index artifact cannot be decoded
"""

from __future__ import annotations

from core.errors import ParleyError


class KbError(ParleyError):
    pass


class EmbeddingError(KbError):
    pass


class SourceError(KbError):
    pass


class IndexCorrupt(KbError):
    pass
