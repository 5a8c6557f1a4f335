"""The LLM port and its OpenAI-compatible implementation (Chat Completions, ``stream=True``).

The openai client retries connection errors, 408/409/429 and 5xx with backoff (honouring Retry-After) up
to ``max_retries``; we add deadlines it does not have (first token, whole reply) and map its errors onto
our tree so the engine can answer in the persona's voice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import openai

from core.errors import (
    ContextTooLong,
    LLMError,
    LLMRateLimited,
    LLMRejected,
    LLMTimeout,
    LLMUnavailable,
)
from core.settings import Settings
from core.types import Usage


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system", "user" or "assistant"
    content: str
    images: tuple[str, ...] = ()  # image URLs (``data:`` or https) sent as ``image_url`` content parts


def wire_message(m: ChatMessage) -> dict[str, Any]:
    """A message as Chat Completions wants it: plain text, or text + image parts when it carries images."""
    if not m.images:
        return {"role": m.role, "content": m.content}
    parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in m.images]
    return {"role": m.role, "content": parts}


@dataclass(frozen=True, slots=True)
class LLMRequest:
    messages: Sequence[ChatMessage]
    model: str
    temperature: float = 0.7
    max_tokens: int = 600


@dataclass(frozen=True, slots=True)
class LLMDelta:
    text: str


@dataclass(frozen=True, slots=True)
class LLMEnd:
    finish_reason: str
    usage: Usage | None  # None when the server sent no usage chunk


LLMEvent = LLMDelta | LLMEnd


class LLM(Protocol):
    def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]: ...

    async def aclose(self) -> None: ...


def map_openai_error(exc: openai.OpenAIError) -> LLMError:
    """openai's exceptions -> ours; the message never includes the request (it may hold user text)."""
    if isinstance(exc, openai.APITimeoutError):
        return LLMTimeout("the model did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return LLMUnavailable("cannot connect to the model endpoint")
    if isinstance(exc, openai.RateLimitError):
        return LLMRateLimited("the model endpoint is rate limiting us (429)")
    if isinstance(exc, openai.APIStatusError):
        code = ""
        body = exc.body
        if isinstance(body, dict):
            inner = body.get("error", body)
            if isinstance(inner, dict):
                code = str(inner.get("code") or "")
        if code == "context_length_exceeded" or "context length" in str(exc.message).lower():
            return ContextTooLong("the prompt is longer than the model's context window")
        if exc.status_code >= 500:
            return LLMUnavailable(f"the model endpoint failed ({exc.status_code})")
        return LLMRejected(f"the model endpoint refused the request ({exc.status_code} {code})".strip())
    return LLMUnavailable(f"model call failed: {type(exc).__name__}")


async def _next_within(events: AsyncIterator[Any], seconds: float) -> Any:
    try:
        return await asyncio.wait_for(anext(events), seconds)
    except TimeoutError:
        raise LLMTimeout(f"no output from the model within {seconds:.0f}s") from None


class OpenAILLM:
    """:class:`LLM` over ``openai.AsyncOpenAI``."""

    def __init__(self, settings: Settings) -> None:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
        self._client = openai.AsyncOpenAI(
            api_key=key,
            base_url=settings.openai_base_url or None,
            timeout=openai.Timeout(
                settings.parley_llm_total_timeout, connect=settings.parley_llm_connect_timeout
            ),
            max_retries=settings.parley_llm_max_retries,
        )
        self._first_token_timeout = settings.parley_llm_first_token_timeout
        self._total_timeout = settings.parley_llm_total_timeout
        self._stream_usage = settings.parley_llm_stream_usage
        self._closed = False

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": [wire_message(m) for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "stream": True,
        }
        if self._stream_usage:
            kwargs["stream_options"] = {"include_usage": True}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_timeout
        finish = ""
        usage: Usage | None = None
        try:
            response = await asyncio.wait_for(
                self._client.chat.completions.create(**kwargs), self._first_token_timeout
            )
            chunks = aiter(response)
            first = True
            try:
                while True:
                    wait = self._first_token_timeout if first else max(0.0, deadline - loop.time())
                    try:
                        chunk = await _next_within(chunks, wait)
                    except StopAsyncIteration:
                        break
                    first = False
                    if chunk.usage is not None:
                        usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                    for choice in chunk.choices:
                        if choice.delta is not None and choice.delta.content:
                            yield LLMDelta(choice.delta.content)
                        if choice.finish_reason:
                            finish = choice.finish_reason
            finally:
                await response.close()
        except TimeoutError:
            raise LLMTimeout("the model did not start answering in time") from None
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
        yield LLMEnd(finish or "stop", usage)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.close()
