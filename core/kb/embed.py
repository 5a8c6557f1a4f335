"""Embeddings: the embedded model in process (core/kb/minilm.py, the default when its extra is installed)
or an OpenAI-compatible ``/v1/embeddings`` (OpenAI, vLLM, Ollama, llama.cpp) when ``EMBEDDINGS_*`` is set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import openai
from yarl import URL

from core.kb import minilm
from core.kb.chunking import Sizing, estimate_tokens
from core.kb.errors import EmbeddingError
from core.kb.settings import EmbeddingSettings, KbConfig
from core.net.tls import http_client
from core.settings import Settings


class Embedder(Protocol):
    model: str
    where: str  # for messages: "in process (...)" or the endpoint's URL (no credentials)

    async def embed(self, texts: Sequence[str], *, keep: bool = True) -> list[list[float]]:
        """Unit vectors for ``texts``. ``keep=False`` for a user's words (a question): an embedder that
        keeps vectors (the embedded model's disk cache) must not keep these."""
        ...

    async def aclose(self) -> None: ...


def public_url(url: str) -> str:
    """A URL fit for a log line or an error: user info dropped."""
    try:
        return str(URL(url).with_user(None))
    except (ValueError, TypeError):
        return "(unparsable URL)"


class OpenAIEmbedder:
    def __init__(self, settings: Settings, emb: EmbeddingSettings, *, max_retries: int = 2) -> None:
        self.model = emb.model
        self._batch = emb.embeddings_batch
        base = emb.base_url(settings)
        self.where = public_url(base) if base else "https://api.openai.com/v1"
        self._client = openai.AsyncOpenAI(
            api_key=emb.api_key(settings),
            base_url=base,
            timeout=emb.embeddings_timeout,
            max_retries=max_retries,
            http_client=http_client(base),
        )

    def _error(self, exc: openai.APIError) -> EmbeddingError:
        status = getattr(exc, "status_code", None)
        what = f"{type(exc).__name__}{f' {status}' if status else ''}"
        if isinstance(exc, openai.APIConnectionError):
            fix = "is the server running and EMBEDDINGS_BASE_URL right?"
        elif status in (401, 403):
            fix = "check EMBEDDINGS_API_KEY (or OPENAI_API_KEY)"
        elif status in (400, 404, 422):
            fix = f"does the server serve the model {self.model!r}? check EMBEDDINGS_MODEL"
        else:
            fix = "retry later, or unset EMBEDDINGS_* to use the embedded model"
        # The message may quote the request; the status and class are enough to act on.
        return EmbeddingError(f"embeddings endpoint {self.where} failed ({what}): {fix}")

    async def embed(self, texts: Sequence[str], *, keep: bool = True) -> list[list[float]]:
        out: list[list[float]] = []  # nothing is kept here: ``keep`` is for embedders that cache
        for start in range(0, len(texts), self._batch):
            batch = list(texts[start : start + self._batch])
            try:
                resp = await self._client.embeddings.create(model=self.model, input=batch)
            except openai.APIError as exc:
                raise self._error(exc) from exc
            rows = sorted(resp.data, key=lambda d: d.index)
            if len(rows) != len(batch):
                raise EmbeddingError(
                    f"embeddings endpoint {self.where} returned {len(rows)} vectors for {len(batch)} texts"
                )
            out += [list(r.embedding) for r in rows]
        return out

    async def aclose(self) -> None:
        await self._client.close()


def make_embedder(settings: Settings, emb: EmbeddingSettings, *, max_retries: int = 2) -> Embedder | None:
    """The configured server, else the embedded model (when installed and not turned off), else None."""
    if emb.enabled:
        return OpenAIEmbedder(settings, emb, max_retries=max_retries)
    if emb.embeddings_local and minilm.available():
        return minilm.LocalEmbedder(emb.cache_dir(settings))
    return None


def sizing(embedder: Embedder | None, cfg: KbConfig) -> Sizing:
    """How chunks are sized: in the embedded model's word pieces within its limit; else estimated."""
    if isinstance(embedder, minilm.LocalEmbedder):
        model = embedder.model_sync()  # loaded once per process; callers are in a worker thread
        return Sizing(model.count, cfg.chunk_tokens, embedder.max_tokens, cfg.overlap_tokens)
    return Sizing(estimate_tokens, cfg.chunk_tokens, 100_000, cfg.overlap_tokens)


async def probe(embedder: Embedder) -> str:
    """One line naming the model and its dimension, from a real call (raises EmbeddingError)."""
    vector = (await embedder.embed(["probe"]))[0]
    return f"embeddings: ok ({embedder.model}, {len(vector)} dimensions, {embedder.where})"
