"""Health, readiness and metrics over HTTP, and the routes adapters mount beside them.

    GET /healthz   200 while the process runs its event loop (liveness)
    GET /readyz    200 when every readiness check passes: Redis answers, the LLM circuit is not open, each
                   adapter says it is connected; 503 with the failing checks (and while shutting down)
    GET /metrics   Prometheus text format

By default everything listens on ``PORT``, and an adapter that needs HTTP (Slack in HTTP mode) mounts its
routes on the same server with :meth:`OpsHttp.mount` (from ``build_adapter``, before ``parley run`` starts
serving). With ``PARLEY_OPS_PORT`` set, the three endpoints move to that port and ``PORT`` serves only the
mounted routes: keep metrics off a public load balancer that way. A whole sub-application (the operator
console) mounts with :meth:`OpsHttp.mount_app`: beside the ops endpoints, or on a port of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from core.errors import ConfigError
from core.ops.metrics import CONTENT_TYPE, Metrics

log = structlog.get_logger("parley.http")

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""A readiness check: None when fine, else a short reason (never a secret)."""

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OpsHttp:
    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - a container's server must listen beyond loopback
        port: int = 3000,
        ops_port: int | None = None,
        check_timeout: float = 2.0,
    ) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.ops_port = ops_port if ops_port is not None and ops_port != port else None
        self.check_timeout = check_timeout
        self.draining = False
        self._checks: dict[str, ReadinessCheck] = {}
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        self._routes: dict[tuple[str, str], RouteHandler] = {}
        self._apps: list[tuple[str, web.Application, int | None]] = []
        self._runners: list[web.AppRunner] = []
        self.bound: dict[str, int] = {}  # "public" / "ops" -> the port actually bound (PORT=0 picks one)
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
                await self._serve(alone, port, prefix, "PARLEY_CONSOLE_PORT")
        if self.ops_port is not None:
            ops = web.Application()
            self._add_ops_routes(ops)
            self._add_apps(ops)
            await self._serve(ops, self.ops_port, "ops", "PARLEY_OPS_PORT")
        if self.ops_port is None or self._routes:
            await self._serve(public, self.port, "public", "PORT")

    def _add_ops_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)

    def _add_apps(self, app: web.Application) -> None:
        for prefix, sub, port in self._apps:
            if port is None:
                app.add_subapp(prefix, sub)

    async def _serve(self, app: web.Application, port: int, name: str, variable: str) -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"{variable}={port}: cannot listen on {self.host}: {exc.strerror or exc} (is another server "
                "using it? An adapter that serves HTTP itself needs PARLEY_OPS_PORT set to another port)"
            ) from None
        address = runner.addresses[0]
        self.bound[name] = int(address[1])
        log.info("http_listening", server=name, host=self.host, port=self.bound[name])

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
                problem = await asyncio.wait_for(check(), self.check_timeout)
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
                await asyncio.wait_for(refresh(), self.check_timeout)
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
        return await handler(request)
