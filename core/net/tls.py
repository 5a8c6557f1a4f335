"""The HTTP client of every OpenAI-compatible client (chat, moderation, embeddings, images, audio).

One TLS context per process: each ``openai.AsyncOpenAI`` built without one loads the CA bundle again, 50-90 ms
of CPU, four or five times per runtime. A plain-http endpoint (a local vLLM, Ollama or llama.cpp, a gateway
inside the cluster) goes through aiohttp (core/net/aio.py: streamed replies read in batches for less CPU)."""

from __future__ import annotations

import functools
import os
import ssl
from typing import Any

import httpx2 as httpx
import openai

from core.net.aio import AioTransport

# The SDK's own client defaults (max connections, keep-alive), for the aiohttp transport.
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The context the HTTP client would build: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, else the
    system's CA store."""
    if cafile := os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=cafile)
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    return ssl.create_default_context()


def on_aiohttp(base_url: str | None) -> bool:
    """Whether :func:`http_client` sends to ``base_url`` through aiohttp (core/net/aio.py): plain http."""
    return bool(base_url and base_url.lower().startswith("http://"))


def http_client(base_url: str | None, **options: Any) -> openai.DefaultAsyncHttpxClient:
    """The SDK's default HTTP client (its timeouts, limits and redirects) on the shared TLS context; for an
    ``http://`` ``base_url``, on the aiohttp transport."""
    if on_aiohttp(base_url):
        options.setdefault("transport", AioTransport(limits=LIMITS))
    return openai.DefaultAsyncHttpxClient(verify=tls_context(), **options)
