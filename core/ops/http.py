"""Health, readiness and metrics over HTTP, and the routes adapters mount beside them.

    GET /healthz   200 while the process runs its event loop (liveness)
    GET /readyz    200 when every readiness check passes: Redis answers, the LLM circuit is not open, each
                   adapter says it is connected; 503 with the failing checks (and while shutting down)
    GET /metrics   Prometheus text format

The three endpoints have their own server: ``PARLEY_OPS_HOST:PARLEY_OPS_PORT`` (default 127.0.0.1:9090, so
they are never on a public port by accident; Kubernetes sets 0.0.0.0 for its probes). ``PORT`` (on
``PARLEY_HTTP_HOST``) serves only the routes adapters mount with :meth:`OpsHttp.mount` (Slack in HTTP mode).
Setting ``PARLEY_OPS_PORT`` to ``PORT`` puts everything on one server (a deliberate opt-in).

Both servers defend against slow and idle clients: a connection must send a full request head within
``keepalive`` seconds (and is closed after as long idle between requests), a mounted route's body must
arrive within ``body_timeout`` seconds (else 408), and at most ``max_connections`` are open per server
(more are answered 503 and closed), of which at most ``max_per_peer`` from one address: one client holding
idle half-sent requests cannot take every slot from Slack's deliveries. Addresses in ``trusted_proxies``
(a reverse proxy, a load balancer) are exempt from the per-peer cap (they carry everyone's connections),
and only behind them is ``X-Forwarded-For`` believed (:func:`client_address`). Run a reverse proxy or load
balancer in front of the public port for TLS and for buffering slow clients (deploy/README.md).

A whole sub-application (the operator console) mounts with :meth:`OpsHttp.mount_app`: beside the ops
endpoints (on ``PARLEY_OPS_HOST``), or on a port of its own (on the same host).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from core.errors import ConfigError
from core.ops.metrics import CONTENT_TYPE, Metrics

log = structlog.get_logger("parley.http")

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""A readiness check: None when fine, else a short reason (never a secret)."""

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """How long and how many: what a slow or idle client may hold."""

    keepalive: float = 5.0  # seconds to send a request head, and idle between requests, before closing
    body_timeout: float = 10.0  # seconds for a mounted route's request body to arrive
    max_connections: int = 256  # open connections per server; more are answered 503 and closed
    max_per_peer: int = 32  # of those, from one address (trusted proxies excepted)
    trusted_proxies: tuple[IPNetwork, ...] = field(default_factory=tuple)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: str | Sequence[str]) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, 192.168.1.7"`` -> networks; ``ValueError`` names a bad entry."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    out = []
    for item in (i.strip() for i in items):
        if item:
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"not an IP address or network: {item!r}") from None
    return tuple(out)


def _trusted(address: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(request: web.Request, trusted: Sequence[IPNetwork]) -> str:
    """Who sent ``request``: the peer, or, when the peer is a trusted proxy, the nearest address in
    ``X-Forwarded-For`` that is not one (a client cannot spoof its way past a proxy that appends)."""
    peer = request.remote or ""
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [
        h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()
    ]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class _Refuse(asyncio.Protocol):
    """Answers 503 and hangs up: the connection cap is reached."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


class _PeerCounted(asyncio.Protocol):
    """Stands in front of aiohttp's protocol to count connections per peer address; over the per-peer cap
    it answers 503 and hangs up without ever reaching aiohttp."""

    def __init__(self, site: _CappedSite, make: Callable[[], asyncio.Protocol]) -> None:
        self._site, self._make = site, make
        self._inner: asyncio.Protocol | None = None
        self._peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        site = self._site
        peername = transport.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else ""
        if peer and not _trusted(peer, site.limits.trusted_proxies):
            if site.per_peer[peer] >= site.limits.max_per_peer:
                site.refused += 1
                site.refused_per_peer += 1
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(_BUSY)
                transport.close()
                return
            site.per_peer[peer] += 1
            self._peer = peer
        self._inner = self._make()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._peer:
            counts = self._site.per_peer
            counts[self._peer] -= 1
            if counts[self._peer] <= 0:
                del counts[self._peer]
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class _CappedSite(web.BaseSite):
    """A TCP site that refuses connections beyond ``max_connections``, and beyond ``max_per_peer`` from
    one address (aiohttp's own has no cap)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: EdgeLimits) -> None:
        super().__init__(runner)
        self._host, self._port, self._max = host, port, limits.max_connections
        self.limits = limits
        self.per_peer: Counter[str] = Counter()
        self.refused = 0
        self.refused_per_peer = 0

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) >= self._max:
                self.refused += 1
                return _Refuse()
            return _PeerCounted(self, server)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, self._host, self._port, backlog=self._backlog)


class OpsHttp:
    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - a container's server must listen beyond loopback
        port: int = 3000,
        ops_host: str = "127.0.0.1",
        ops_port: int | None = 9090,
        check_timeout: float = 2.0,
        limits: EdgeLimits | None = None,
    ) -> None:
        """``ops_port=None``: the ops endpoints share ``port`` (with ``host``)."""
        self.metrics = metrics
        self.host = host
        self.port = port
        self.ops_host = ops_host
        self.ops_port = ops_port
        self.check_timeout = check_timeout
        self.limits = limits or EdgeLimits()
        self.sites: dict[str, _CappedSite] = {}
        self.draining = False
        self._checks: dict[str, ReadinessCheck] = {}
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        self._routes: dict[tuple[str, str], RouteHandler] = {}
        self._apps: list[tuple[str, web.Application, int | None]] = []
        self._runners: list[web.AppRunner] = []
        self.bound: dict[str, int] = {}  # "public" / "ops" -> the port actually bound (PORT=0 picks one)
        self.listening = asyncio.Event()  # set once every server is bound (``bound`` fills one by one)
        self.started_at = time.time()

    # ------------------------------------------------------------------ what others register

    def mount(self, method: str, path: str, handler: RouteHandler) -> None:
        """Serve ``method path`` on ``PORT`` (e.g. ``mount("POST", "/slack/events", handler)``)."""
        self._routes[(method.upper(), path)] = handler

    def mount_app(self, prefix: str, app: web.Application, *, port: int | None = None) -> None:
        """Serve a sub-application under ``prefix``: on the server of /healthz and /metrics, or alone on
        ``port`` (bound as ``bound[prefix]``)."""
        self._apps.append((prefix, app, port))

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """A readiness check (an adapter: "connected to the gateway"); replaces one of the same name."""
        self._checks[name] = check

    def add_refresher(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Called before /metrics renders (e.g. to read the queue depth from Redis)."""
        self._refreshers.append(refresh)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        public = web.Application()
        if self.ops_port is None:
            self._add_ops_routes(public)
            self._add_apps(public)
        public.router.add_route("*", "/{tail:.*}", self._dispatch)
        for prefix, app, port in self._apps:
            if port is not None:
                alone = web.Application()
                alone.add_subapp(prefix, app)
                await self._serve(alone, self.ops_host, port, prefix, "PARLEY_CONSOLE_PORT")
        if self.ops_port is not None:
            ops = web.Application()
            self._add_ops_routes(ops)
            self._add_apps(ops)
            await self._serve(ops, self.ops_host, self.ops_port, "ops", "PARLEY_OPS_PORT")
        if self.ops_port is None or self._routes:
            await self._serve(public, self.host, self.port, "public", "PORT")
        self.listening.set()

    def _add_ops_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)

    def _add_apps(self, app: web.Application) -> None:
        for prefix, sub, port in self._apps:
            if port is None:
                app.add_subapp(prefix, sub)

    async def _serve(self, app: web.Application, host: str, port: int, name: str, variable: str) -> None:
        # keepalive_timeout also bounds the wait for a first request head: aiohttp closes a connection
        # still waiting for one when it fires (the default, 3630 s, let half-open clients sit for an hour).
        # lingering_time: after an early answer (a 408), how long the rest of a body is drained (was 10 s).
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=self.limits.keepalive,
            lingering_time=1.0,
        )
        await runner.setup()
        self._runners.append(runner)
        site = _CappedSite(runner, host, port, self.limits)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"{variable}={port}: cannot listen on {host}: {exc.strerror or exc} (is another server "
                "using it? An adapter that serves HTTP itself needs PARLEY_OPS_PORT set to another port)"
            ) from None
        self.sites[name] = site
        address = runner.addresses[0]
        self.bound[name] = int(address[1])
        log.info("http_listening", server=name, host=host, port=self.bound[name])

    async def aclose(self) -> None:
        """Stop listening. Idempotent."""
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    async def __aenter__(self) -> OpsHttp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ handlers

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "uptime": round(time.time() - self.started_at, 1)})

    async def readiness(self) -> dict[str, str]:
        """Failing checks by name (empty: ready)."""
        problems: dict[str, str] = {}
        if self.draining:
            problems["shutdown"] = "shutting down"

        async def run(name: str, check: ReadinessCheck) -> None:
            try:
                async with asyncio.timeout(self.check_timeout):
                    problem = await check()
            except TimeoutError:
                problem = f"no answer within {self.check_timeout:g}s"
            except Exception as exc:  # a check boundary: a broken check reports, it does not crash the probe
                problem = f"{type(exc).__name__}"
            if problem:
                problems[name] = problem

        await asyncio.gather(*(run(name, check) for name, check in self._checks.items()))
        return problems

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = await self.readiness()
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        return web.json_response({"status": "ready", "checks": sorted(self._checks)})

    async def _metrics(self, request: web.Request) -> web.Response:
        for refresh in self._refreshers:
            try:
                async with asyncio.timeout(self.check_timeout):
                    await refresh()
            except Exception as exc:  # stale gauges are better than no metrics
                log.warning("metrics_refresh_failed", error=type(exc).__name__)
        body = self.metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            allowed = sorted(m for m, p in self._routes if p == request.path)
            if allowed:
                return web.Response(status=405, headers={"Allow": ", ".join(allowed)})
            return web.Response(status=404, text="not found")
        if request.can_read_body:
            try:  # read (and cache) the body under a deadline: a client that trickles it is cut off
                async with asyncio.timeout(self.limits.body_timeout):
                    await request.read()
            except TimeoutError:
                log.info("http_body_timeout", path=request.path)
                return web.Response(status=408, text="request body too slow", headers={"Connection": "close"})
        return await handler(request)
