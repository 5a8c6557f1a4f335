"""Download an image attachment within the bot's limits: declared type and size first, then the bytes.

The platform's URL comes from a signed event (Discord gateway, Slack Events API). Credentials, where a
platform needs them (Slack's ``url_private`` wants the bot token), come from the platform's Delivery through
:class:`ImageAuth`: core never holds a platform token.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import aiohttp

from core.errors import ImageRejected, MediaError, ParleyError
from core.types import ImageRef, Place

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff(data: bytes) -> str:
    """The image type the bytes really are ("" when none we know): a declared type is not trusted."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return ""


@dataclass(frozen=True, slots=True)
class ImageData:
    ref: ImageRef
    mime: str
    data: bytes = field(repr=False)

    @property
    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"


@runtime_checkable
class ImageAuth(Protocol):
    """Implemented by a platform's Delivery when its files need credentials (Slack)."""

    async def image_headers(self, ref: ImageRef, place: Place) -> Mapping[str, str]: ...


class ImageFetcher:
    """Fetch attachments over HTTP with a size cap; ``aclose()`` is idempotent."""

    def __init__(
        self,
        *,
        max_bytes: int,
        types: frozenset[str],
        timeout: float,
        auth_for: Callable[[str], ImageAuth | None],
        sniffer: Callable[[bytes], str] = sniff,
    ) -> None:
        self.max_bytes = max_bytes
        self._sniff = sniffer  # what the bytes really are (images by default; audio for clips)
        self.types = types
        self._auth_for = auth_for  # platform -> its credentials provider, if any
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None  # made on first use (inside the loop)
        self._closed = False

    def precheck(self, ref: ImageRef) -> None:
        """Refuse on what the platform declared, before any download."""
        if ref.mime and ref.mime.split(";")[0].strip().lower() not in self.types:
            raise ImageRejected(f"type {ref.mime} is not accepted")
        if ref.size > self.max_bytes:
            raise ImageRejected(f"{ref.size} bytes is over the {self.max_bytes}-byte limit")

    async def fetch(self, ref: ImageRef, place: Place) -> ImageData:
        self.precheck(ref)
        auth = self._auth_for(place.platform)
        try:
            headers = dict(await auth.image_headers(ref, place)) if auth is not None else {}
        except ParleyError as exc:  # no credentials for this file (uninstalled app, foreign host)
            raise MediaError(f"no credentials for the image: {exc}") from None
        chunks: list[bytes] = []
        size = 0
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(ref.url, headers=headers, max_redirects=3) as response:
                if response.status != 200:
                    raise MediaError(f"the image download failed (HTTP {response.status})")
                if (response.content_length or 0) > self.max_bytes:
                    raise ImageRejected(
                        f"{response.content_length} bytes is over the {self.max_bytes}-byte limit"
                    )
                async for chunk in response.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ImageRejected(f"over the {self.max_bytes}-byte limit")
                    chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MediaError(f"the image download failed ({type(exc).__name__})") from None
        data = b"".join(chunks)
        mime = self._sniff(data)
        if mime not in self.types:
            raise ImageRejected("the file is not an accepted image type")
        return ImageData(ref, mime, data)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._session is not None:
                await self._session.close()
