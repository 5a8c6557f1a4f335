"""Embeddings from an OpenAI-compatible ``/v1/embeddings`` (OpenAI, vLLM, Ollama, llama.cpp server)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import openai

from core.kb.errors import EmbeddingError
from core.kb.settings import EmbeddingSettings
from core.settings import Settings


class Embedder(Protocol):
    model: str

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def aclose(self) -> None: ...


class OpenAIEmbedder:
    def __init__(self, settings: Settings, emb: EmbeddingSettings) -> None:
        self.model = emb.model
        self._batch = emb.embeddings_batch
        self._client = openai.AsyncOpenAI(
            api_key=emb.api_key(settings),
            base_url=emb.base_url(settings),
            timeout=emb.embeddings_timeout,
            max_retries=2,
        )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self._batch):
            batch = list(texts[start : start + self._batch])
            try:
                resp = await self._client.embeddings.create(model=self.model, input=batch)
            except openai.APIError as exc:
                # The message may quote the request; the status and class are enough to act on.
                status = getattr(exc, "status_code", None)
                raise EmbeddingError(
                    f"embeddings endpoint failed ({type(exc).__name__}{f' {status}' if status else ''})"
                ) from exc
            rows = sorted(resp.data, key=lambda d: d.index)
            if len(rows) != len(batch):
                raise EmbeddingError(
                    f"embeddings endpoint returned {len(rows)} vectors for {len(batch)} texts"
                )
            out += [list(r.embedding) for r in rows]
        return out

    async def aclose(self) -> None:
        await self._client.close()


def make_embedder(settings: Settings, emb: EmbeddingSettings) -> Embedder | None:
    return OpenAIEmbedder(settings, emb) if emb.enabled else None
