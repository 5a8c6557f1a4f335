"""Download an image attachment within the bot's limits: declared type and size first, then the bytes,
through the outbound-fetch guard (core/net/guard.py) narrowed to the platform's own file hosts.

The platform's URL comes from a signed event (Discord gateway, Slack Events API). Credentials, where a
platform needs them (Slack's ``url_private`` wants the bot token), come from the platform's Delivery through
:class:`ImageAuth`: core never holds a platform token.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from core.errors import ImageRejected, MediaError, ParleyError
from core.net.guard import FetchError, FetchPolicy, FetchRefused, GuardedFetcher
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


@dataclass(frozen=True)
class ImageHosts:
    """Where a platform serves its files from: ``hosts`` over https (``.example.com``: a domain and its
    subdomains), and ``configured``, the platform API base URL the operator set (a proxy, a test fake),
    whose host is accepted over its own scheme and at whatever address the operator pointed it to."""

    hosts: tuple[str, ...]
    configured: str = ""


@runtime_checkable
class ImageSource(Protocol):
    """Implemented by a platform's Delivery: the hosts its image URLs may come from."""

    def image_hosts(self) -> ImageHosts: ...


def image_policy(base: FetchPolicy, source: ImageHosts | None) -> FetchPolicy:
    """The fetch policy for one platform's images: the guard's, narrowed to the platform's hosts."""
    if source is None:
        return base
    hosts = list(source.hosts)
    allow = list(base.allow)
    http: tuple[str, ...] = ()
    configured = urlsplit(source.configured) if source.configured else None
    if configured is not None and configured.hostname:
        hosts.append(configured.hostname)
        allow.append(configured.hostname)  # the operator named it: its address is theirs to choose
        http = (configured.hostname,) if configured.scheme == "http" else ()
    return FetchPolicy(tuple(allow), tuple(hosts), base.allow_http, 3, base.setting, http)


class ImageFetcher:
    """Fetch attachments through the outbound-fetch guard with a size cap; ``aclose()`` is idempotent.

    ``source_for(platform)`` is the platform's Delivery: credentials (:class:`ImageAuth`) and the hosts its
    files come from (:class:`ImageSource`); a platform that names no hosts gets the guard alone (https,
    public addresses, every redirect hop checked)."""

    def __init__(
        self,
        *,
        max_bytes: int,
        types: frozenset[str],
        timeout: float,
        auth_for: Callable[[str], object | None],
        allow: tuple[str, ...] = (),
        sniffer: Callable[[bytes], str] = sniff,
    ) -> None:
        self.max_bytes = max_bytes
        self._sniff = sniffer  # what the bytes really are (images by default; audio for clips)
        self.types = types
        self._source_for = auth_for  # platform -> its Delivery (credentials, hosts), if any
        self.policy = FetchPolicy(allow, setting="[images] fetch_allow")
        self._fetcher = GuardedFetcher(self.policy, timeout=timeout, user_agent="parley-images")

    def precheck(self, ref: ImageRef) -> None:
        """Refuse on what the platform declared, before any download."""
        if ref.mime and ref.mime.split(";")[0].strip().lower() not in self.types:
            raise ImageRejected(f"type {ref.mime} is not accepted")
        if ref.size > self.max_bytes:
            raise ImageRejected(f"{ref.size} bytes is over the {self.max_bytes}-byte limit")

    async def fetch(self, ref: ImageRef, place: Place) -> ImageData:
        self.precheck(ref)
        source = self._source_for(place.platform)
        policy = image_policy(self.policy, source.image_hosts() if isinstance(source, ImageSource) else None)
        try:
            policy.check_url(ref.url)  # before any credentials are asked for
            headers = dict(await source.image_headers(ref, place)) if isinstance(source, ImageAuth) else {}
        except FetchRefused as exc:
            raise MediaError(f"the image URL was refused: {exc}") from None
        except ParleyError as exc:  # no credentials for this file (uninstalled app, foreign host)
            raise MediaError(f"no credentials for the image: {exc}") from None
        try:
            got = await self._fetcher.get(ref.url, max_bytes=self.max_bytes, headers=headers, policy=policy)
        except FetchRefused as exc:
            raise MediaError(f"the image URL was refused: {exc}") from None
        except FetchError as exc:
            if "limit" in str(exc):
                raise ImageRejected(f"over the {self.max_bytes}-byte limit") from None
            raise MediaError(f"the image download failed ({exc})") from None
        mime = self._sniff(got.data)
        if mime not in self.types:
            raise ImageRejected("the file is not an accepted image type")
        return ImageData(ref, mime, got.data)

    async def aclose(self) -> None:
        await self._fetcher.aclose()
