"""The outbound-fetch guard shared by the knowledge base's ingest and image fetching.

Every request a bot makes on behalf of a document or a chat message (a URL to ingest, each sitemap ``<loc>``,
an image attachment, an Images API result URL) goes through :class:`GuardedFetcher`, which:

- accepts only ``https`` (``http`` only when the policy allows it);
- when the policy names hosts (a platform's file hosts), accepts only those;
- resolves the host itself (an aiohttp resolver that checks every address it returns, so the connection goes
  to an address that was checked: no DNS rebinding between check and connect) and refuses loopback, private,
  link-local (cloud metadata at 169.254.169.254), shared, multicast, reserved and unspecified addresses,
  IPv4-mapped or not, unless the operator's allow-list names the host or the address (``127.0.0.1``,
  ``10.0.0.0/8``, ``intranet.example``);
- follows redirects itself, applying all of the above to every hop, up to ``max_redirects``;
- reads at most ``max_bytes`` within ``timeout`` seconds.

A refusal is a :class:`FetchRefused` whose message names the URL and the setting that would allow it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from core.errors import ParleyError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchError(ParleyError):
    """An outbound fetch failed (network, status, size, time): the message names the URL."""


class FetchRefused(FetchError):
    """The guard refused a URL before connecting (scheme, host, address, redirect limit)."""


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None


def is_public(ip: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, shared (CGNAT), multicast, reserved."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class FetchPolicy:
    """What may be fetched. ``allow``: the operator's exceptions to the private-address rule (host names,
    addresses or networks); ``hosts``: when not empty, the only hosts accepted (exact names, or ``.suffix``
    for a domain and its subdomains); ``allow_http``: plain http too."""

    allow: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    allow_http: bool = False
    max_redirects: int = 5
    setting: str = "the fetch allow-list"  # named in refusals: where the operator would allow it
    http_hosts: tuple[str, ...] = ()  # hosts plain http is allowed for (a configured test fake or proxy)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        networks: list[IPNetwork] = []
        names: set[str] = set()
        for entry in self.allow:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "_names", frozenset(names))

    @property
    def http_hint(self) -> str:
        return f", or set {self.setting}_http = true" if self.setting.startswith("[kb]") else ""

    def host_named(self, host: str) -> bool:
        return host.lower().rstrip(".") in self._names

    def address_ok(self, host: str, ip: IPAddress) -> bool:
        if is_public(ip) or self.host_named(host):
            return True
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return any(ip in net or (mapped is not None and mapped in net) for net in self._networks)

    def host_listed(self, host: str) -> bool:
        if not self.hosts:
            return True
        host = host.lower().rstrip(".")
        for entry in self.hosts:
            entry = entry.lower()
            if host == entry.lstrip(".") or (entry.startswith(".") and host.endswith(entry)):
                return True
        return False

    def check_url(self, url: str | URL) -> URL:
        """The parsed URL when its scheme, host and (for a literal) address pass; else FetchRefused."""
        try:
            parsed = url if isinstance(url, URL) else URL(url)
        except (ValueError, TypeError):
            raise FetchRefused(f"{url}: not a URL") from None
        shown = str(parsed.with_user(None)) if parsed.host else str(url)
        if parsed.scheme not in ("https", "http"):
            raise FetchRefused(f"{shown}: only https URLs are fetched")
        plain_ok = self.allow_http or (parsed.host or "").lower() in self.http_hosts
        if parsed.scheme == "http" and not plain_ok:
            raise FetchRefused(f"{shown}: plain http is refused (use https{self.http_hint})")
        host = parsed.host or ""
        if not host:
            raise FetchRefused(f"{shown}: no host")
        if not self.host_listed(host):
            raise FetchRefused(f"{shown}: host {host} is not one this platform serves files from")
        ip = _address(host)
        if ip is not None and not self.address_ok(host, ip):
            raise FetchRefused(
                f"{shown}: {ip} is a private, loopback or link-local address "
                f"(name it in {self.setting} to allow it)"
            )
        return parsed


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver and refuses a name whose addresses include a forbidden one."""

    def __init__(self, policy: FetchPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            ip = _address(result["host"])
            if ip is None or not self._policy.address_ok(host, ip):
                raise FetchRefused(
                    f"{host} resolves to {result['host']}, a private, loopback or link-local address "
                    f"(name it in {self._policy.setting} to allow it)"
                )
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # the final URL, after redirects
    content_type: str
    data: bytes = field(repr=False)


class GuardedFetcher:
    """An aiohttp session whose every connection and redirect hop passes the policy (``aclose()``: once)."""

    def __init__(self, policy: FetchPolicy, *, timeout: float = 30.0, user_agent: str = "parley") -> None:
        self.policy = policy
        self._timeout = timeout
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None  # made on first use, inside the loop
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise FetchError("the fetcher is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy), limit=16)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout, connect=min(10.0, self._timeout)),
                headers={"User-Agent": self._user_agent},
                trust_env=False,  # no proxy from the environment: the guard checks where we connect
            )
        return self._session

    async def get(
        self,
        url: str,
        *,
        max_bytes: int,
        headers: Mapping[str, str] | None = None,
        policy: FetchPolicy | None = None,
        accept: tuple[int, ...] = (200,),
    ) -> Fetched:
        """GET ``url`` (following redirects hop by hop under ``policy``) and read at most ``max_bytes``.
        Credentials in ``headers`` are sent to the first host only, never across a redirect."""
        policy = policy or self.policy
        current = policy.check_url(url)
        session = self._open()
        sent = dict(headers or {})
        try:
            async with asyncio.timeout(self._timeout):
                for _hop in range(policy.max_redirects + 1):
                    async with session.get(current, headers=sent, allow_redirects=False) as resp:
                        if resp.status in _REDIRECTS and "Location" in resp.headers:
                            target = current.join(URL(resp.headers["Location"]))
                            current = policy.check_url(target)
                            sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
                            continue
                        if resp.status not in accept:
                            raise FetchError(f"{_shown(current)}: HTTP {resp.status}")
                        if (resp.content_length or 0) > max_bytes:
                            size = resp.content_length
                            raise FetchError(f"{_shown(current)}: {size} bytes, over the limit ({max_bytes})")
                        data = await _read(resp, max_bytes, current)
                        return Fetched(str(current), resp.headers.get("Content-Type", ""), data)
                raise FetchRefused(f"{_shown(url)}: more than {policy.max_redirects} redirects")
        except TimeoutError:
            raise FetchError(f"{_shown(current)}: no complete answer within {self._timeout:g}s") from None
        except FetchRefused:
            raise
        except aiohttp.ClientConnectorError as exc:
            cause: Any = exc.os_error
            if isinstance(cause, FetchRefused):
                raise cause from None
            raise FetchError(f"{_shown(current)}: cannot connect ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            # aiohttp wraps a resolver's error; ours says what was refused and why.
            inner = exc.__cause__ or exc.__context__
            if isinstance(inner, FetchRefused):
                raise inner from None
            raise FetchError(f"{_shown(current)}: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._session is not None:
                await self._session.close()


async def _read(resp: aiohttp.ClientResponse, max_bytes: int, url: URL) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"{_shown(url)}: over the {max_bytes}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _shown(url: str | URL) -> str:
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        return str(parsed.with_user(None).with_query(None)) if parsed.host else str(url)
    except (ValueError, TypeError):
        return "(unparsable URL)"
