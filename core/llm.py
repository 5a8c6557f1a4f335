"""The LLM port and its OpenAI-compatible implementation (Chat Completions, ``stream=True``).

With ``LLMRequest.tools`` the model may answer with tool calls instead of (or after) text: their arguments
arrive as streamed JSON fragments keyed by ``index`` (several calls in parallel), assembled here into one
:class:`LLMToolCalls` event before :class:`LLMEnd`. ``<think>`` blocks of reasoning models are removed from
the streamed text (core/think.py).

The openai client retries connection errors, 408/409/429 and 5xx with backoff (honouring Retry-After) up
to ``max_retries``; we add deadlines it does not have (first token, whole reply) and map its errors onto
our tree so the engine can answer in the persona's voice.

:meth:`OpenAILLM.observe_responses` lets a wrapper see every HTTP response's status and headers (the
provider's ``x-ratelimit-*`` and ``Retry-After``, internal retries included), through an httpx event hook on
the client's own http_client; ``core/ops/pacing.py`` uses it to keep the shared provider budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
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
from core.net.tls import http_client
from core.settings import Settings
from core.think import ThinkFilter
from core.types import Usage


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the model asked for; ``arguments`` is the raw JSON text it wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system", "user", "assistant" or "tool"
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message that asked for tools
    tool_call_id: str = ""  # a "tool" message answers this call
    images: tuple[str, ...] = ()  # image URLs (``data:`` or https) sent as ``image_url`` content parts

    def to_openai(self) -> dict[str, Any]:
        """The message as Chat Completions wants it: plain text, or text + image parts when it carries
        images; tool calls and tool results as their fields."""
        content: Any = self.content
        if self.images:
            content = [{"type": "text", "text": self.content}] if self.content else []
            content += [{"type": "image_url", "image_url": {"url": url}} for url in self.images]
        out: dict[str, Any] = {"role": self.role, "content": content}
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True, slots=True)
class LLMRequest:
    messages: Sequence[ChatMessage]
    model: str
    temperature: float = 0.7
    max_tokens: int = 600
    tools: Sequence[Mapping[str, Any]] = ()  # OpenAI "tools" entries ({"type": "function", ...})


@dataclass(frozen=True, slots=True)
class LLMDelta:
    text: str


@dataclass(frozen=True, slots=True)
class LLMToolCalls:
    """The tool calls of one completion, in index order (sent once, just before :class:`LLMEnd`)."""

    calls: tuple[ToolCall, ...]

    @property
    def text(self) -> str:
        """No text: lets a consumer that offered no tools treat every non-end event as text."""
        return ""


@dataclass(frozen=True, slots=True)
class LLMEnd:
    finish_reason: str
    usage: Usage | None  # None when the server sent no usage chunk


LLMEvent = LLMDelta | LLMToolCalls | LLMEnd


class ToolCallAssembler:
    """Streamed tool-call fragments -> whole calls. The first fragment of a call carries its id and name;
    later ones (same ``index``) append to its arguments."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]

    def add(self, index: int, call_id: str | None, name: str | None, arguments: str | None) -> None:
        entry = self._calls.setdefault(index, ["", "", ""])
        if call_id:
            entry[0] = call_id
        if name and not entry[1]:  # some servers repeat the name in every fragment
            entry[1] = name
        if arguments:
            entry[2] += arguments

    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(cid or f"call_{i}", name, args or "{}")
            for i, (cid, name, args) in sorted(self._calls.items())
            if name
        )


class LLM(Protocol):
    def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]: ...

    async def aclose(self) -> None: ...


# Called with (HTTP status, response headers) for every response of the endpoint, before its body is read.
ResponseObserver = Callable[[int, Mapping[str, str]], Awaitable[None]]


class _Response(Protocol):
    status_code: int
    headers: Mapping[str, str]


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


def _chunk(data: str) -> dict[str, Any]:
    """One server-sent chunk; an error event mid-stream (or garbage) ends the reply as a failure."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise LLMUnavailable("the model endpoint sent a malformed stream") from None
    if not isinstance(chunk, dict):
        raise LLMUnavailable("the model endpoint sent a malformed stream")
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        raise LLMUnavailable(f"the model endpoint failed mid-stream: {message[:200]}")
    return chunk


async def _next_within(events: AsyncIterator[Any], seconds: float) -> Any:
    try:
        async with asyncio.timeout(seconds):  # no task per chunk, unlike wait_for
            return await anext(events)
    except TimeoutError:
        raise LLMTimeout(f"no output from the model within {seconds:.0f}s") from None


class OpenAILLM:
    """:class:`LLM` over ``openai.AsyncOpenAI``."""

    def __init__(self, settings: Settings) -> None:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
        self._observers: list[ResponseObserver] = []
        self._client = openai.AsyncOpenAI(
            api_key=key,
            base_url=settings.openai_base_url or None,
            timeout=openai.Timeout(
                settings.parley_llm_total_timeout, connect=settings.parley_llm_connect_timeout
            ),
            max_retries=settings.parley_llm_max_retries,
            http_client=http_client(event_hooks={"response": [self._observe]}),
        )
        self._first_token_timeout = settings.parley_llm_first_token_timeout
        self._total_timeout = settings.parley_llm_total_timeout
        self._stream_usage = settings.parley_llm_stream_usage
        self._closed = False

    def observe_responses(self, observer: ResponseObserver) -> None:
        """Call ``observer(status, headers)`` for every HTTP response, the client's own retries included."""
        self._observers.append(observer)

    async def _observe(self, response: _Response) -> None:
        for observer in self._observers:
            await observer(response.status_code, response.headers)

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        # The messages and tools go in ``extra_body``, which the SDK sends as given: as typed arguments the
        # SDK first walks them against every variant of its TypedDict unions (``_transform``), a few ms of
        # CPU per request with a persona prompt and tool schemas, and sends the same JSON.
        body: dict[str, Any] = {"messages": [m.to_openai() for m in request.messages]}
        if request.tools:
            body["tools"] = list(request.tools)
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": [],  # required by the signature; extra_body's replaces it
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "stream": True,
            "extra_body": body,
        }
        if self._stream_usage:
            kwargs["stream_options"] = {"include_usage": True}
        think = ThinkFilter()
        assembler = ToolCallAssembler()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_timeout
        finish = ""
        usage: Usage | None = None
        try:
            async with contextlib.AsyncExitStack() as stack:
                # The raw event stream, decoded here with json.loads: the SDK's typed chunks cost about
                # 0.2 ms each, a third of a busy bot's CPU at 60 tokens/s per reply. The SDK still sends the
                # request, retries, and raises its errors for a failed status.
                opened = self._client.chat.completions.with_streaming_response.create(**kwargs)
                response = await asyncio.wait_for(
                    stack.enter_async_context(opened), self._first_token_timeout
                )
                lines = aiter(response.iter_lines())
                first = True
                while True:
                    wait = self._first_token_timeout if first else max(0.0, deadline - loop.time())
                    try:
                        line = await _next_within(lines, wait)
                    except StopAsyncIteration:
                        break
                    except LLMError:
                        raise
                    except Exception as exc:  # the HTTP client's transport errors (the SDK's own are private)
                        raise LLMUnavailable("the connection to the model broke mid-reply") from exc
                    if not line.startswith("data:"):
                        continue  # blank separators, comments (": keep-alive"), event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    first = False
                    chunk = _chunk(data)
                    if raw_usage := chunk.get("usage"):
                        usage = Usage(
                            raw_usage.get("prompt_tokens") or 0, raw_usage.get("completion_tokens") or 0
                        )
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if content := delta.get("content"):
                            shown = think.feed(content)
                            if shown:
                                yield LLMDelta(shown)
                        for part in delta.get("tool_calls") or ():
                            fn = part.get("function") or {}
                            assembler.add(
                                part.get("index", 0), part.get("id"), fn.get("name"), fn.get("arguments")
                            )
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
        except TimeoutError:
            raise LLMTimeout("the model did not start answering in time") from None
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
        rest = think.flush()
        if rest:
            yield LLMDelta(rest)
        calls = assembler.calls()
        if calls:
            yield LLMToolCalls(calls)
        yield LLMEnd(finish or "stop", usage)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.close()
