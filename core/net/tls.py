"""One TLS context per process for every OpenAI-compatible client (chat, moderation, embeddings, images,
audio): each ``openai.AsyncOpenAI`` built without one loads the CA bundle again, 50-90 ms of CPU, four or five
times per runtime."""

from __future__ import annotations

import functools
import os
import ssl
from typing import Any

import openai


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The context the HTTP client would build: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, else the
    system's CA store."""
    if cafile := os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=cafile)
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    return ssl.create_default_context()


def http_client(**options: Any) -> openai.DefaultAsyncHttpxClient:
    """The SDK's default HTTP client (its timeouts, limits and redirects) on the shared TLS context."""
    return openai.DefaultAsyncHttpxClient(verify=tls_context(), **options)
