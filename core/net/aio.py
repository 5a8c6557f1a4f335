"""An httpx transport over aiohttp whose response bodies are read in batches, for plain-http model endpoints.

Why: a streamed reply is read a batch at a time (core/llm.py). Through httpx's own transport each token is
an h11 event passed up through five generator layers, and each socket read is an anyio receive (resume,
wait, pause, a cancel scope). Here the socket is paused between batches (the tokens wait in the kernel), a
batch is one resumed read parsed by aiohttp's C parser, and :meth:`AioBody.batch` hands over everything
buffered at once. A 70-token reply's stream: 30 -> 21 ms of CPU in the client (the same wall time).

Only for ``http://``: over TLS, Python 3.11's asyncio keeps reading the socket while the application is
paused (sslproto pauses at its high-water mark only), so every token would wake the loop again; https
endpoints keep httpx's transport, whose TLS layer pauses.

The OpenAI SDK still builds, sends and retries requests and maps errors: this only moves the bytes, and maps
aiohttp's errors onto httpx's (which the SDK knows).

A body whose server closes the connection at its end (the request said ``Connection: close``) can go
*quiet* (:meth:`AioBody.quiet`): the socket stays registered but its receive low-water mark (SO_RCVLOWAT)
is raised, so arriving tokens wake nobody while the server's FIN does, at once. The reader then rests a
longer while between batches (:meth:`AioBody.rest`) and still sees the reply's end the moment it comes,
where a paused socket needs one more wake-up per batch (the next token) and sees the end only at a batch's
edge. A batch drops the mark to one byte for one read (Linux signals readiness on the change).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Final

import aiohttp
import httpx2 as httpx

# ``httpx.Response.extensions`` key under which a response carries its :class:`AioBody`.
BODY: Final = "parley.body"
# A quiet socket's low-water mark: more than any rest's tokens (~200 bytes each), so only a FIN (or a flood)
# wakes the loop before the reader asks. Linux caps it at half the largest receive buffer.
QUIET_LOWAT: Final = 1 << 18


@contextlib.contextmanager
def _mapped(*, connecting: bool) -> Iterator[None]:
    """aiohttp's errors as the httpx ones the SDK retries and maps (a refused connection is not a timeout)."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise (httpx.ConnectTimeout if connecting else httpx.ReadTimeout)(str(exc) or "timed out") from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc)) from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise (httpx.ConnectError if connecting else httpx.ReadError)(str(exc)) from exc


class AioBody(httpx.AsyncByteStream):
    """A response body: iterated whole by the SDK (``aread``), or read in batches by the LLM stream."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._transport: asyncio.Transport | None = None
        if response.connection is not None and isinstance(response.connection.transport, asyncio.Transport):
            self._transport = response.connection.transport
        self._socket = self._transport.get_extra_info("socket") if self._transport is not None else None
        self._paused = False
        self._quiet = False
        self._resting: asyncio.Future[None] | None = None
        self.identity = response.headers.get("Content-Encoding", "identity").lower() == "identity"
        # The server closes the connection after this body (it answered ``Connection: close``).
        self.closes = response.headers.get("Connection", "").lower() == "close"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._resume()
        with _mapped(connecting=False):
            async for chunk in self._response.content.iter_any():
                yield chunk

    @property
    def received(self) -> int:
        """Bytes of the body taken off the socket so far."""
        return self._response.content.total_bytes

    async def batch(self) -> bytes:
        """What has arrived since the last batch (waiting if nothing has); b"" once the body has ended.

        The socket is paused again before returning, so the tokens that arrive until the next batch cost no
        wake-up. (The caller reads only identity-encoded bodies this way: ``identity``.)"""
        content = self._response.content
        if self._quiet:
            self._lowat(1)  # what has arrived is readable now
            try:
                with _mapped(connecting=False):
                    return await content.readany()
            finally:
                if not content.at_eof():
                    self._lowat(QUIET_LOWAT)
        self._resume()
        with _mapped(connecting=False):
            data = await content.readany()
        if not content.at_eof():
            self._pause()
        return data

    def quiet(self) -> bool:
        """Go quiet (the module's docstring): True if the body is now read that way, False if it cannot be
        (the server keeps the connection, or the platform has no readable low-water mark for its poller)."""
        if self._quiet:
            return True
        sock = self._socket
        if not self.closes or sock is None or not self.identity or self._response.content.at_eof():
            return False
        if not sys.platform.startswith("linux"):  # elsewhere a lowered mark may not wake the poller
            return False
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, QUIET_LOWAT)
        except (OSError, AttributeError):
            return False
        self._quiet = True
        self._response.content.on_eof(self._wake)
        self._resume()  # registered from now on: the server's FIN must wake the loop
        return True

    async def rest(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the body ends meanwhile (a quiet body only: otherwise a sleep)."""
        if not self._quiet:
            await asyncio.sleep(seconds)
            return
        if self._response.content.is_eof():
            return
        loop = asyncio.get_running_loop()
        self._resting = woken = loop.create_future()
        timer = loop.call_later(seconds, self._wake)
        try:
            await woken
        finally:
            timer.cancel()
            self._resting = None

    def _wake(self) -> None:
        if self._resting is not None and not self._resting.done():
            self._resting.set_result(None)

    def _lowat(self, size: int) -> None:
        if self._socket is not None and self._transport is not None and not self._transport.is_closing():
            with contextlib.suppress(OSError):
                self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)

    async def batches(self) -> AsyncIterator[bytes]:
        """:meth:`batch` after batch until the body ends."""
        while data := await self.batch():
            yield data

    def _pause(self) -> None:
        transport = self._transport
        if transport is not None and not self._paused and not transport.is_closing():
            transport.pause_reading()
            self._paused = True

    def _resume(self) -> None:
        transport = self._transport
        if self._paused and transport is not None and not transport.is_closing():
            transport.resume_reading()
        self._paused = False

    async def aclose(self) -> None:
        # Resumed first: a connection that goes back to the pool must not stay paused.
        self._resume()
        if self._response.content.at_eof():
            self._response.release()  # read whole: the connection goes back to the pool
        else:
            self._response.close()  # left mid-body (a cancelled turn): the connection is not reused


class AioTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one :class:`aiohttp.ClientSession` (made on first use, in the loop)."""

    def __init__(self, *, limits: httpx.Limits) -> None:
        # (No proxy here: httpx routes proxied URLs to its own proxy transports before this one.)
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry or 15.0,
        )
        # httpx already set every header and encoded the body, and decodes a compressed body itself.
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        timeouts: Mapping[str, Any] = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("pool"),
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        # Credentials in the URL were already made an Authorization header (by httpx, or the SDK's key
        # replaced them); aiohttp refuses a request that has both.
        url = request.url.copy_with(userinfo=b"") if request.url.userinfo else request.url
        with _mapped(connecting=True):
            response = await session.request(
                request.method,
                str(url),
                headers=list(request.headers.multi_items()),
                data=await request.aread() or None,
                allow_redirects=False,
                timeout=timeout,
            )
        body = AioBody(response)
        return httpx.Response(
            response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=body,
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
                BODY: body,
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
