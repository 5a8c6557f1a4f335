"""A fake OpenAI-compatible server on loopback (aiohttp), for the real ``openai`` client.

It serves ``POST /v1/chat/completions`` (streaming SSE with an optional usage chunk, or a whole JSON
completion), ``POST /v1/moderations`` and ``POST /v1/embeddings`` (deterministic hashed bag-of-words vectors:
texts that share words are near, no model needed), records every request, and plays scripted behaviours:
replies with chosen pacing, HTTP errors (429 with Retry-After, 500, context-length 400) and hangs.

Tool calls: ``ToolCalls([Call("name", {...}), ...])`` streams the calls' arguments as small JSON fragments,
interleaving parallel calls by ``index`` as real servers do, and ends with ``finish_reason="tool_calls"``.

``fake.rate_limit = RateLimit(requests=N, window=seconds)`` makes it a provider with a limit: every chat
response carries ``x-ratelimit-*`` headers, and a request over the limit gets 429 with ``Retry-After`` and
``retry-after-ms`` (``fake.limited`` holds when each 429 was sent, ``fake.accepted`` when each accepted one).

Scripting: ``fake.queue(...)`` appends behaviours used in order by the next chat requests; when the queue is
empty ``fake.responder(body)`` decides (default: echo the last user message).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.audio import wav
from tests.fakes.images import decode_data_url, png


@dataclass
class Reply:
    text: str
    chunk_chars: int = 8  # characters per streamed chunk
    delay: float = 0.0  # seconds between chunks
    first_delay: float = 0.0  # seconds before the first chunk (time to first token)
    finish_reason: str = "stop"
    usage: bool = True  # send the usage chunk when the client asks for it
    fail_after_chunks: int | None = None  # drop the connection after this many chunks
    # Pace chunks on an absolute clock instead of ``delay``: chunk n leaves first_delay + n / tokens_per_s
    # after the request (one chunk per token), so many concurrent streams do not drift under load.
    tokens_per_s: float | None = None
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers (e.g. x-ratelimit-*)
    # Stop before chunk ``hold_at`` until the test sets ``hold``: "still streaming" without a long stream.
    hold: asyncio.Event | None = None
    hold_at: int = 0


@dataclass
class Error:
    status: int
    message: str = "fake error"
    code: str | None = None
    type: str = "server_error"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hang:
    seconds: float = 3600.0


@dataclass
class Call:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)  # a str is sent as is (even broken JSON)
    id: str = ""


@dataclass
class ToolCalls:
    calls: list[Call]
    text: str = ""  # content streamed before the calls ("Let me check...")
    arg_chunk_chars: int = 6  # characters of arguments JSON per streamed fragment
    usage: bool = True


Behaviour = Reply | Error | Hang | ToolCalls


@dataclass
class RateLimit:
    """The fake's own limit: at most ``requests`` chat requests accepted in any ``window`` seconds."""

    requests: int
    window: float = 60.0
    headers: bool = True  # send x-ratelimit-limit/remaining/reset-requests on every chat response
    retry_after: bool = True  # send Retry-After / retry-after-ms with the 429


def openai_duration(seconds: float) -> str:
    """How OpenAI writes x-ratelimit-reset-*: ``"250ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:.3g}s"


@dataclass
class Recorded:
    path: str
    body: dict[str, Any]
    at: float
    headers: dict[str, str]


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content", "")
            if isinstance(content, list):  # content parts: the text, and a count of the images
                texts = [str(p.get("text", "")) for p in content if p.get("type") == "text"]
                images = sum(1 for p in content if p.get("type") == "image_url")
                return " ".join([*texts, f"[{images} image(s)]" if images else ""]).strip()
            return str(content)
    return ""


def echo(body: dict[str, Any]) -> Behaviour:
    return Reply(f"You said: {last_user_text(body)}")


EMBEDDING_DIMS = 256
_EMBED_WORD = re.compile(r"[a-z0-9]+")
_EMBED_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "my",
        "me",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
    ]
)


def _bucket(feature: str) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
    return int.from_bytes(digest[:4], "little") % EMBEDDING_DIMS, (1.0 if digest[4] & 1 else -1.0)


def fake_embedding(text: str) -> list[float]:
    """A deterministic stand-in for a sentence embedding: each word (crudely stemmed) and its character
    trigrams hashed into 256 signed buckets, L2-normalised. Shared words and word stems pull texts
    together."""
    vec = [0.0] * EMBEDDING_DIMS
    for word in _EMBED_WORD.findall(text.lower()):
        if word in _EMBED_STOP:
            continue
        stem = re.sub(r"(?:ing|ed|es|s)$", "", word) if len(word) > 4 else word
        features = [(f"w:{stem}", 1.0)] + [
            (f"t:{stem[i : i + 3]}", 0.3) for i in range(max(0, len(stem) - 2))
        ]
        for feature, weight in features:
            i, sign = _bucket(feature)
            vec[i] += sign * weight
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def _approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.behaviours: deque[Behaviour] = deque()
        self.responder: Callable[[dict[str, Any]], Behaviour] = echo
        self.flagged_words: set[str] = set()  # /v1/moderations flags input containing any of these
        self.flagged_image_markers: set[bytes] = set()  # ... and images whose bytes contain any of these
        self.image_flag_category = "sexual"  # the category a flagged image scores high in
        self.text_flag_category = "harassment"  # ... and flagged text
        self.moderation_behaviour: Behaviour | None = None
        self.embeddings_behaviour: Behaviour | None = None  # an Error or Hang for /v1/embeddings
        self.images_behaviour: Error | Hang | None = None  # e.g. Error(404): a server without an Images API
        self.images_gate: asyncio.Event | None = None  # set: image requests wait for it (races in tests)
        # Audio: ``/v1/audio/speech`` answers a real WAV (0.5 s tone); ``/v1/audio/transcriptions`` answers
        # ``transcript``. ``audio_behaviour = Error(404)`` is a server without either API.
        self.audio_behaviour: Error | None = None
        self.transcript = "hello from a voice message"
        self.spoken: list[str] = []  # the ``input`` of every speech request, in order
        self.heard: list[int] = []  # the byte size of every file sent for transcription
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()  # releases hanging handlers so the server stops at once
        self.port = 0
        self.active_streams = 0
        self.streams_done = asyncio.Event()  # set whenever the last open stream has been written whole
        # Chat requests from arrival to the end of the response (the load bench reads the peak).
        self.chat_in_flight = 0
        self.peak_chat_in_flight = 0
        self.rate_limit: RateLimit | None = None
        self.accepted: list[float] = []  # monotonic times of chat requests within the rate limit
        self.limited: list[float] = []  # ... and of those answered 429 by it

    # -- scripting and inspection

    def queue(self, *behaviours: Behaviour) -> None:
        self.behaviours.extend(behaviours)

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def moderation_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/moderations")]

    @property
    def image_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/images/generations")]

    def image_inputs(self) -> list[str]:
        """Image URLs the chat requests carried as ``image_url`` content parts, oldest first."""
        return [
            str(part["image_url"]["url"])
            for r in self.chat_requests
            for m in r.body.get("messages", [])
            if isinstance(m.get("content"), list)
            for part in m["content"]
            if isinstance(part, dict) and part.get("type") == "image_url"
        ]

    def reset_peak(self) -> None:
        """Start counting the peak of chat requests in flight afresh (from those in flight now)."""
        self.peak_chat_in_flight = self.chat_in_flight

    @property
    def embedding_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/images/generations", self._images)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        assert server.sockets
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.requests.append(Recorded(request.path, body, time.monotonic(), dict(request.headers)))
        return body

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def _hang(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _next(self, body: dict[str, Any]) -> Behaviour:
        return self.behaviours.popleft() if self.behaviours else self.responder(body)

    @staticmethod
    def _error(err: Error) -> web.Response:
        payload = {"error": {"message": err.message, "type": err.type, "code": err.code, "param": None}}
        return web.json_response(payload, status=err.status, headers=err.headers)

    def _rate(self) -> tuple[dict[str, str], web.Response | None]:
        """Apply ``rate_limit``: the headers to send, and the 429 to send instead (None: go ahead)."""
        limit = self.rate_limit
        if limit is None:
            return {}, None
        now = time.monotonic()
        recent = [t for t in self.accepted if t > now - limit.window]
        reset = (recent[0] + limit.window - now) if recent else 0.0
        over = len(recent) >= limit.requests
        if not over:
            self.accepted.append(now)
            recent.append(now)
            reset = recent[0] + limit.window - now
        headers: dict[str, str] = {}
        if limit.headers:
            headers = {
                "x-ratelimit-limit-requests": str(limit.requests),
                "x-ratelimit-remaining-requests": str(max(0, limit.requests - len(recent))),
                "x-ratelimit-reset-requests": openai_duration(reset),
            }
        if not over:
            return headers, None
        self.limited.append(now)
        if limit.retry_after:
            headers |= {
                "retry-after": str(max(1, round(reset))),
                "retry-after-ms": str(max(1, round(reset * 1000))),
            }
        error = Error(429, "Rate limit reached for requests", "rate_limit_exceeded", "requests", headers)
        return headers, self._error(error)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.chat_in_flight += 1
        self.peak_chat_in_flight = max(self.peak_chat_in_flight, self.chat_in_flight)
        try:
            return await self._chat_response(request)
        finally:
            self.chat_in_flight -= 1

    async def _chat_response(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        rate_headers, refused = self._rate()
        if refused is not None:
            return refused
        behaviour = self._next(body)
        if isinstance(behaviour, Hang):
            await self._hang(behaviour.seconds)
            return web.Response(status=504)
        if isinstance(behaviour, Error):
            return self._error(behaviour)
        if isinstance(behaviour, ToolCalls):
            return await self._tool_calls(request, body, behaviour)
        created = int(time.time())
        prompt_tokens = sum(_approx_tokens(str(m.get("content", ""))) for m in body.get("messages", []))
        model = body.get("model", "fake-model")
        headers = {**rate_headers, **behaviour.headers}
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": behaviour.finish_reason,
                            "message": {"role": "assistant", "content": behaviour.text},
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": _approx_tokens(behaviour.text),
                        "total_tokens": prompt_tokens + _approx_tokens(behaviour.text),
                    },
                },
                headers=headers,
            )
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers}
        )
        await resp.prepare(request)
        self.active_streams += 1
        self.streams_done.clear()
        try:
            if behaviour.first_delay:
                await self._hang(behaviour.first_delay)
            if self._closing.is_set():
                return resp
            base = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
            }
            text = behaviour.text
            step = max(1, behaviour.chunk_chars)
            pieces = [text[i : i + step] for i in range(0, len(text), step)] or [""]
            paced_from = time.monotonic()
            for n, piece in enumerate(pieces):
                if behaviour.fail_after_chunks is not None and n >= behaviour.fail_after_chunks:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                if n and behaviour.tokens_per_s:
                    due = paced_from + n / behaviour.tokens_per_s - time.monotonic()
                    if due > 0:
                        await self._hang(due)
                    if self._closing.is_set():
                        return resp
                elif n and behaviour.delay:
                    await self._hang(behaviour.delay)
                    if self._closing.is_set():
                        return resp
                if behaviour.hold is not None and n == behaviour.hold_at:
                    await behaviour.hold.wait()
                delta: dict[str, Any] = {"content": piece}
                if n == 0:
                    delta["role"] = "assistant"
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": behaviour.finish_reason}]}
            await resp.write(f"data: {json.dumps(final)}\n\n".encode())
            if behaviour.usage and body.get("stream_options", {}).get("include_usage"):
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(pieces),
                    "total_tokens": prompt_tokens + len(pieces),
                }
                await resp.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        finally:
            self.active_streams -= 1
            if not self.active_streams:
                self.streams_done.set()
        return resp

    async def _tool_calls(
        self, request: web.Request, body: dict[str, Any], b: ToolCalls
    ) -> web.StreamResponse:
        created = int(time.time())
        model = body.get("model", "fake-model")
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model}
        calls = []
        for n, call in enumerate(b.calls):
            args = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
            calls.append((call.id or f"call_{len(self.chat_requests)}_{n}", call.name, args))
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": b.text or None}
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                for cid, name, args in calls
            ]
            choice = {"index": 0, "finish_reason": "tool_calls", "message": message}
            return web.json_response({**base, "object": "chat.completion", "choices": [choice]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": b.text or None})
        # The head of each call (id, name), then argument fragments round-robin across the calls.
        for index, (cid, name, _) in enumerate(calls):
            head = {
                "index": index,
                "id": cid,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            await send({"tool_calls": [head]})
        step = max(1, b.arg_chunk_chars)
        pieces = [[args[i : i + step] for i in range(0, len(args), step)] for _, _, args in calls]
        for round_ in range(max((len(p) for p in pieces), default=0)):
            for index, parts in enumerate(pieces):
                if round_ < len(parts):
                    await send({"tool_calls": [{"index": index, "function": {"arguments": parts[round_]}}]})
        await send({}, "tool_calls")
        if b.usage and body.get("stream_options", {}).get("include_usage"):
            prompt_tokens = sum(_approx_tokens(str(m.get("content", ""))) for m in body.get("messages", []))
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": 5,
                "total_tokens": prompt_tokens + 5,
            }
            await resp.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        behaviour = self.embeddings_behaviour
        if isinstance(behaviour, Hang):
            await self._hang(behaviour.seconds)
        if isinstance(behaviour, Error):
            return self._error(behaviour)
        inputs = body.get("input", "")
        items = inputs if isinstance(inputs, list) else [inputs]
        if not all(isinstance(item, str) for item in items):
            return self._error(
                Error(400, "fake: token-id inputs are not supported", type="invalid_request_error")
            )
        data = [
            {"object": "embedding", "index": i, "embedding": fake_embedding(t)} for i, t in enumerate(items)
        ]
        tokens = sum(_approx_tokens(t) for t in items)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "fake-embeddings"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _moderations(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        behaviour = self.moderation_behaviour
        if isinstance(behaviour, Hang):
            await self._hang(behaviour.seconds)
        if isinstance(behaviour, Error):
            return self._error(behaviour)
        inputs = body.get("input", "")
        items = inputs if isinstance(inputs, list) else [inputs]
        results = []
        for item in items:
            if isinstance(item, dict) and item.get("type") == "image_url":
                data = decode_data_url(str((item.get("image_url") or {}).get("url", "")))
                hit = any(m in data for m in self.flagged_image_markers)
            else:
                text = item if isinstance(item, str) else json.dumps(item)
                hit = any(w.lower() in text.lower() for w in self.flagged_words)
            categories = dict.fromkeys(MODERATION_CATEGORIES, False)
            scores = dict.fromkeys(MODERATION_CATEGORIES, 0.001)
            if hit:
                category = self.image_flag_category if isinstance(item, dict) else self.text_flag_category
                categories[category] = True
                scores[category] = 0.97
            results.append(
                {
                    "flagged": hit,
                    "categories": categories,
                    "category_scores": scores,
                    "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
                }
            )
        return web.json_response(
            {"id": "modr-fake", "model": body.get("model", "omni-moderation-latest"), "results": results}
        )

    async def _images(self, request: web.Request) -> web.Response:
        """``POST /v1/images/generations``: a small PNG made on the spot, as ``b64_json``."""
        body = await self._record(request)
        if self.images_gate is not None:
            await self.images_gate.wait()
        behaviour = self.images_behaviour
        if isinstance(behaviour, Hang):
            await self._hang(behaviour.seconds)
            return web.Response(status=504)
        if isinstance(behaviour, Error):
            return self._error(behaviour)
        n = int(body.get("n") or 1)
        picture = png(16, 16, rgb=(30, 90, 200), text=str(body.get("prompt", ""))[:64].encode())
        data = [{"b64_json": base64.b64encode(picture).decode(), "revised_prompt": None} for _ in range(n)]
        return web.json_response({"created": int(time.time()), "data": data})

    async def _speech(self, request: web.Request) -> web.Response:
        """``POST /v1/audio/speech``: a real WAV (whatever format was asked: the client sniffs it)."""
        body = await self._record(request)
        if self.audio_behaviour is not None:
            return self._error(self.audio_behaviour)
        self.spoken.append(str(body.get("input", "")))
        return web.Response(body=wav(0.5), content_type="audio/wav")

    async def _transcriptions(self, request: web.Request) -> web.Response:
        """``POST /v1/audio/transcriptions`` (multipart ``file`` + ``model``): ``{"text": transcript}``."""
        form = await request.post()
        upload = form.get("file")
        size = len(upload.file.read()) if isinstance(upload, web.FileField) else 0
        self.requests.append(
            Recorded(
                request.path, {"model": str(form.get("model", ""))}, time.monotonic(), dict(request.headers)
            )
        )
        if self.audio_behaviour is not None:
            return self._error(self.audio_behaviour)
        self.heard.append(size)
        return web.json_response({"text": self.transcript})


MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


async def _serve(port: int) -> None:
    fake = FakeOpenAI()
    fake.port = port
    app = web.Application()
    fake.routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"fake OpenAI-compatible server (echo) on http://127.0.0.1:{port}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":  # a stand-in model for trying the plumbing: python -m tests.fakes.openai_server
    import argparse

    parser = argparse.ArgumentParser(description="Echoing fake OpenAI-compatible server on loopback")
    parser.add_argument("--port", type=int, default=8765)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args().port))
