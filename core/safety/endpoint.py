"""The OpenAI moderation endpoint (``POST /v1/moderations``, ``omni-moderation-latest``), openai client.

No retries and a short deadline: a moderation check sits in front of every answer, so a slow endpoint is
treated as a down one and the profile's fail-open / fail-closed choice applies. Errors are mapped onto
:class:`core.errors.ModerationError`; messages never include the checked text.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict

import openai

from core.errors import ModerationError
from core.net.tls import http_client

PERMANENT_STATUSES = frozenset({401, 403, 404, 405, 501})  # a wrong URL or key, or no such endpoint


class ModerationUnavailable(ModerationError):
    """The endpoint failed, timed out or refused the request. ``code`` is short and safe to record."""

    def __init__(self, message: str, *, code: str, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    @property
    def permanent(self) -> bool:
        return self.status in PERMANENT_STATUSES


class ModerationEndpoint:
    """Category scores for a text, with a small in-process cache (a streamed reply's final check often
    repeats the last partial check)."""

    def __init__(
        self, *, api_key: str, base_url: str | None, model: str, timeout: float, cache_size: int = 256
    ) -> None:
        self.model = model
        self.base_url = base_url or "https://api.openai.com/v1"
        self.timeout = timeout
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=openai.Timeout(timeout, connect=min(timeout, 2.0)),
            max_retries=0,
            http_client=http_client(base_url),
        )
        self._cache: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._cache_size = cache_size
        self._closed = False

    async def scores(self, text: str, *, deadline: float | None = None) -> dict[str, float]:
        return await self._scores(text, text, deadline)

    async def image_scores(self, url: str, *, deadline: float | None = None) -> dict[str, float]:
        """Scores for one image (a ``data:`` URL or a public https URL): the omni models accept images."""
        return await self._scores(
            "image:" + url, [{"type": "image_url", "image_url": {"url": url}}], deadline
        )

    async def _scores(self, key_text: str, query: object, deadline: float | None) -> dict[str, float]:
        key = hashlib.blake2b(key_text.encode(), digest_size=16).hexdigest()
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        deadline = deadline or self.timeout
        try:
            # The raw response, decoded here: the SDK's typed Moderation (pydantic, every category twice)
            # costs more CPU than the request; the SDK still sends it and raises its errors for a bad status.
            moderations = self._client.moderations.with_raw_response
            async with asyncio.timeout(deadline):
                raw = await moderations.create(model=self.model, input=query)  # type: ignore[arg-type]
            data = json.loads(raw.content)
        except TimeoutError:
            raise ModerationUnavailable(f"no answer within {deadline:g}s", code="timeout") from None
        except openai.APITimeoutError:
            raise ModerationUnavailable(f"no answer within {deadline:g}s", code="timeout") from None
        except openai.APIStatusError as exc:
            raise ModerationUnavailable(
                f"HTTP {exc.status_code}", code=f"http_{exc.status_code}", status=exc.status_code
            ) from None
        except openai.APIConnectionError:
            raise ModerationUnavailable("cannot connect", code="connection") from None
        except openai.OpenAIError as exc:
            raise ModerationUnavailable(type(exc).__name__, code="error") from None
        except ValueError:
            raise ModerationUnavailable("not JSON", code="error") from None
        results = data.get("results") if isinstance(data, dict) else None
        first = results[0] if isinstance(results, list) and results else None
        scores = first.get("category_scores") if isinstance(first, dict) else None
        if not isinstance(scores, dict):
            raise ModerationUnavailable("empty result", code="empty")
        numbers = ((str(k), v) for k, v in scores.items() if not isinstance(v, bool))
        result = {k: float(v) for k, v in numbers if isinstance(v, int | float)}
        self._cache[key] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.close()
