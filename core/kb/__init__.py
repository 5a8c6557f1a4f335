"""The knowledge base: ingest documents, index them (BM25 + embeddings), retrieve cited reference chunks.

    sources.py (folders, files, URLs, sitemaps) -> parsers.py (Markdown, HTML, PDF, text)
    -> chunking.py (by headings, with overlap) -> screen.py (injection tripwires, PII redaction)
    -> embed.py (/v1/embeddings) -> index.py (lexical.py + vectors.py, one versioned artifact)
    -> store.py (Redis: every replica loads it, picks up new versions)
    -> retrieve.py (fusion.py, the prompt block, citations)

Nothing here imports Slack or Discord code, and nothing stores user text: queries are used and dropped.
"""
