"""A fake OpenAI-compatible server on loopback (aiohttp), for the real ``openai`` client.

It serves ``POST /v1/chat/completions`` (streaming SSE with an optional usage chunk, or a whole JSON
completion) and ``POST /v1/moderations``, records every request, and plays scripted behaviours: replies
with chosen pacing, HTTP errors (429 with Retry-After, 500, context-length 400) and hangs.

Scripting: ``fake.queue(...)`` appends behaviours used in order by the next chat requests; when the queue is
empty ``fake.responder(body)`` decides (default: echo the last user message).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

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


Behaviour = Reply | Error | Hang


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
        self.images_behaviour: Error | Hang | None = None  # e.g. Error(404): a server without an Images API
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()  # releases hanging handlers so the server stops at once
        self.port = 0
        self.active_streams = 0
        # Chat requests from arrival to the end of the response (the load bench reads the peak).
        self.chat_in_flight = 0
        self.peak_chat_in_flight = 0

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
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/images/generations", self._images)
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

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.chat_in_flight += 1
        self.peak_chat_in_flight = max(self.peak_chat_in_flight, self.chat_in_flight)
        try:
            return await self._chat_response(request)
        finally:
            self.chat_in_flight -= 1

    async def _chat_response(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        behaviour = self._next(body)
        if isinstance(behaviour, Hang):
            await self._hang(behaviour.seconds)
            return web.Response(status=504)
        if isinstance(behaviour, Error):
            return self._error(behaviour)
        created = int(time.time())
        prompt_tokens = sum(_approx_tokens(str(m.get("content", ""))) for m in body.get("messages", []))
        model = body.get("model", "fake-model")
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
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        self.active_streams += 1
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
        return resp

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
    app.router.add_post("/v1/chat/completions", fake._chat)
    app.router.add_post("/v1/moderations", fake._moderations)
    app.router.add_get("/v1/models", fake._models)
    app.router.add_post("/v1/images/generations", fake._images)
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
