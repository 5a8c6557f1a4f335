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
import structlog

from core.errors import (
    ContextTooLong,
    LLMError,
    LLMRateLimited,
    LLMRejected,
    LLMTimeout,
    LLMUnavailable,
)
from core.net.aio import BODY, AioBody
from core.net.tls import http_client, on_aiohttp
from core.settings import Settings
from core.think import ThinkFilter
from core.types import Usage

log = structlog.get_logger("parley.llm")

# After the first text of a reply, the stream is read at most this often: every token read on its own is
# an event-loop wake-up and a trip through the HTTP client and the generator stack above (tools loop,
# breaker, pacing, engine), which at one reply at a time cost about half of a reply's CPU. Deliveries show
# text on an edit interval of a second or so, so nobody sees the difference; the first word is never held.
# (0.05 s saved less: 86 -> 62 ms of CPU per reply at N=1 in make bench-load, 0.1 s -> 46 ms, with the same
# whole-answer times.)
BATCH_SECONDS = 0.1
# Over a quiet socket (core/net/aio.py: a plain-http endpoint that closes the connection after the reply) the
# reply's end wakes the reader at once, so the batches can be further apart: the deliveries show text once a
# second at most, and each batch is a wake-up (on a VM ~0.3 ms of CPU for the sleep alone).
QUIET_BATCH_SECONDS = 0.25


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


def _chunk(data: bytes) -> dict[str, Any]:
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


class _EventLines:
    """The ``data:`` payloads of a server-sent event stream, from its bytes as they arrive (lines end in LF
    or CRLF; blank separators, ``: keep-alive`` comments and ``event:`` names are skipped)."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[bytes]:
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        return [line[5:].strip() for line in lines if line.startswith(b"data:")]

    def end(self) -> list[bytes]:
        """A last line the body ended without a newline after."""
        rest, self._rest = self._rest, b""
        return [rest[5:].strip()] if rest.startswith(b"data:") else []


class _Reader:
    """Reads the response body for :meth:`OpenAILLM.stream`, a batch of events at a time.

    ``read(drain=True)`` takes every event that has arrived: the first read after a pause gets all the bytes
    the kernel held in one go, and the events the HTTP parser already holds come without waiting; it stops
    after the first read that had to wait for the network (which brought new events). That last read is why
    a batch waits for the next bytes: if the model pauses mid-reply, the last batch (a few tokens) waits
    with it. Reading those events without that wait would need the HTTP parser's buffer (private).
    Over aiohttp (:meth:`AioBody.batches`) a piece is everything that arrived while the socket rested, and
    every read resumes the socket (a loop turn): a drained batch is that piece, then the next arrival."""

    def __init__(self, pieces: AsyncIterator[bytes]) -> None:
        self._pieces = pieces
        self._lines = _EventLines()
        self._waited = False
        self._failed: Exception | None = None  # raised by the next read: the events before it go up first
        self.ended = False  # the body ended (with or without ``[DONE]``)

    def _tick(self) -> None:
        self._waited = True

    async def read(self, *, drain: bool) -> list[bytes]:
        if self._failed is not None:
            raise self._failed
        events: list[bytes] = []
        loop = asyncio.get_running_loop()
        reads = 0
        while not self.ended:
            self._waited = False
            tick = loop.call_soon(self._tick)  # runs only if the read below gives the loop a turn
            try:
                data = await anext(self._pieces)
            except StopAsyncIteration:
                self.ended = True
                events += self._lines.end()
                break
            except Exception as exc:  # a broken connection: show what came before it, then fail
                if not events:
                    raise
                self._failed = exc
                break
            finally:
                tick.cancel()
            reads += 1
            events += self._lines.feed(data)
            if events and (not drain or (self._waited and reads > 1)):
                break
        return events


class OpenAILLM:
    """:class:`LLM` over ``openai.AsyncOpenAI``."""

    def __init__(
        self,
        settings: Settings,
        *,
        batch_seconds: float = BATCH_SECONDS,
        quiet_batch_seconds: float = QUIET_BATCH_SECONDS,
    ) -> None:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
        self._observers: list[ResponseObserver] = []
        self._client = openai.AsyncOpenAI(
            api_key=key,
            base_url=settings.openai_base_url or None,
            timeout=openai.Timeout(
                settings.parley_llm_total_timeout, connect=settings.parley_llm_connect_timeout
            ),
            max_retries=settings.parley_llm_max_retries,
            http_client=http_client(settings.openai_base_url, event_hooks={"response": [self._observe]}),
        )
        self._first_token_timeout = settings.parley_llm_first_token_timeout
        self._total_timeout = settings.parley_llm_total_timeout
        self._stream_usage = settings.parley_llm_stream_usage
        self._batch_seconds = batch_seconds
        self._quiet_batch_seconds = quiet_batch_seconds
        # Streams over aiohttp ask the server to close the connection after the reply: its FIN is what ends a
        # quiet read (core/net/aio.py). A new loopback or LAN connection per reply costs far less than the
        # wake-ups it saves; https endpoints (httpx, a TLS handshake per connection) keep theirs.
        self._close_streams = settings.parley_llm_quiet_streams and on_aiohttp(settings.openai_base_url)
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
        if self._close_streams:
            kwargs["extra_headers"] = {"Connection": "close"}
        think = ThinkFilter()
        assembler = ToolCallAssembler()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_timeout
        finish = ""
        usage: Usage | None = None
        batch = self._batch_seconds
        try:
            async with contextlib.AsyncExitStack() as stack:
                reader, events, aio = await self._first_events(stack, kwargs, deadline)
                quiet: AioBody | None = None  # the body, once read quietly (core/net/aio.py)
                # Batches start once the first whole word has been shown (or a tool call seen): a delivery
                # may show text only up to its last space (Slack's stream does), so the first word is
                # read token by token like before.
                coalesce = False
                first_words = ""
                done = False
                while True:
                    shown: list[str] = []
                    for data in events:
                        if data == b"[DONE]":
                            done = True
                            break
                        chunk = _chunk(data)
                        if raw_usage := chunk.get("usage"):
                            usage = Usage(
                                raw_usage.get("prompt_tokens") or 0, raw_usage.get("completion_tokens") or 0
                            )
                        for choice in chunk.get("choices") or ():
                            delta = choice.get("delta") or {}
                            if (content := delta.get("content")) and (text := think.feed(content)):
                                shown.append(text)
                            for part in delta.get("tool_calls") or ():
                                coalesce = True
                                fn = part.get("function") or {}
                                assembler.add(
                                    part.get("index", 0), part.get("id"), fn.get("name"), fn.get("arguments")
                                )
                            if choice.get("finish_reason"):
                                finish = choice["finish_reason"]
                    if shown:
                        joined = "".join(shown)
                        if not coalesce:
                            first_words = (first_words + joined).lstrip()
                            coalesce = any(c.isspace() for c in first_words)
                        yield LLMDelta(joined)
                    if done or reader.ended:
                        break
                    # Then one wake-up per batch instead of one per token: the tokens that arrive meanwhile
                    # wait in the socket and come in one read.
                    if coalesce and batch > 0:
                        if quiet is None and aio is not None and aio.quiet():
                            quiet, batch = aio, self._quiet_batch_seconds
                        if quiet is not None:
                            await quiet.rest(batch)  # or less: the reply's end ends it
                        else:
                            await asyncio.sleep(batch)
                    # A quiet batch is what has arrived (its end is known at once); otherwise it also waits
                    # for the next arrival (which may be the end).
                    events = await self._read(reader, deadline, drain=coalesce and quiet is None)
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
        rest = think.flush()
        if rest:
            yield LLMDelta(rest)
        calls = assembler.calls()
        if calls:
            yield LLMToolCalls(calls)
        yield LLMEnd(finish or "stop", usage)

    async def _first_events(
        self, stack: contextlib.AsyncExitStack, kwargs: dict[str, Any], deadline: float
    ) -> tuple[_Reader, list[bytes], AioBody | None]:
        """Sends the request and waits for its first events, each try within the first-token timeout.

        A try that times out is made again once if a whole first-token wait still fits in the reply's total
        budget (``PARLEY_LLM_TOTAL_TIMEOUT``): nothing has been shown yet, and a request that hangs before
        its first token (an overloaded replica behind the endpoint's load balancer) usually goes through
        when sent again. The SDK's own retries (connection errors, 429, 5xx) happen within each try."""
        loop = asyncio.get_running_loop()
        wait = self._first_token_timeout
        for attempt in (1, 2):
            attempt_stack = contextlib.AsyncExitStack()
            try:
                async with asyncio.timeout(wait):
                    opened = self._client.chat.completions.with_streaming_response.create(**kwargs)
                    response = await attempt_stack.enter_async_context(opened)
                    # The raw event stream, decoded here with json.loads: the SDK's typed chunks cost
                    # about 0.2 ms each. The SDK still sends the request, retries, and raises its errors
                    # for a failed status.
                    # Over aiohttp (a plain-http endpoint) a piece is all that arrived while the socket
                    # rested (core/net/aio.py); over httpx, one chunk.
                    http = response.http_response
                    body = http.extensions.get(BODY)
                    batched = isinstance(body, AioBody) and body.identity
                    reader = _Reader(aiter(body.batches() if batched else http.aiter_bytes()))
                    events = await self._read_body(reader, drain=False)
                    aio = body if batched else None
            except TimeoutError:
                await attempt_stack.aclose()
                if attempt == 2 or deadline - loop.time() < wait:
                    raise LLMTimeout(f"no output from the model within {wait:g}s") from None
                log.warning("llm_first_token_retry", waited=wait)
                continue
            except BaseException:
                await attempt_stack.aclose()
                raise
            stack.push_async_exit(attempt_stack)
            return reader, events, aio
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, reader: _Reader, deadline: float, *, drain: bool) -> list[bytes]:
        try:
            async with asyncio.timeout_at(deadline):  # one timer per batch, not per chunk
                return await self._read_body(reader, drain=drain)
        except TimeoutError:
            raise LLMTimeout(f"the model did not finish within {self._total_timeout:.0f}s") from None

    @staticmethod
    async def _read_body(reader: _Reader, *, drain: bool) -> list[bytes]:
        try:
            return await reader.read(drain=drain)
        except (LLMError, openai.OpenAIError):
            raise
        except Exception as exc:  # the HTTP client's transport errors (the SDK's own are private)
            raise LLMUnavailable("the connection to the model broke mid-reply") from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.close()
