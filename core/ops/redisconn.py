"""Redis from one setting: standalone, Sentinel or Cluster, chosen by the scheme of ``REDIS_URL``.

    redis://[[user]:password@]host[:port][/db]          standalone (also rediss:// and unix:///path.sock)
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=...]
    redis+cluster://[[user]:password@]host[:port][,host[:port]...]

``rediss+sentinel://`` and ``rediss+cluster://`` use TLS to the data nodes. Credentials in the URL are the
data nodes'; ``sentinel_password`` (and ``sentinel_username``) authenticate to the Sentinels. Sentinel
clients follow a failover by themselves; Cluster clients follow slot moves. Every key of one conversation
carries the conversation's ``{hash tag}`` (core.keys), so its scripts and transactions stay in one slot.

A cluster client is handed out typed as :class:`redis.asyncio.Redis`: ``RedisCluster`` implements the same
command methods (it is not a subclass), and every caller in Parley sticks to commands both provide.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import ConfigError

Kind = Literal["standalone", "sentinel", "cluster"]
SENTINEL_PORT = 26379
REDIS_PORT = 6379


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``REDIS_URL``. ``str()`` never shows the password."""

    kind: Kind
    url: str = ""  # standalone only: handed to redis-py as it is
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""  # sentinel: the monitored master's name
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.nodes)
        if self.kind == "sentinel":
            return f"Sentinel {hosts} (master {self.service!r}, db {self.db})"
        if self.kind == "cluster":
            return f"Cluster {hosts}"
        return "REDIS_URL"


def _nodes(hosts: str, default_port: int) -> tuple[tuple[str, int], ...]:
    nodes = []
    for part in hosts.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [ipv6]:port
            host, _, rest = part[1:].partition("]")
            port = rest.lstrip(":") or str(default_port)
        else:
            host, _, port = part.rpartition(":") if ":" in part else (part, "", str(default_port))
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"REDIS_URL: bad host:port {part!r}")
        nodes.append((host, int(port)))
    if not nodes:
        raise ConfigError("REDIS_URL: no host given")
    return tuple(nodes)


def parse_redis_url(url: str) -> RedisTarget:
    """Parse one ``REDIS_URL`` (pure). Errors name the problem, never the password."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        raise ConfigError("REDIS_URL: expected a URL such as redis://host:6379/0")
    scheme = scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget("standalone", url=url.strip())
    if scheme not in ("redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"):
        raise ConfigError(
            f"REDIS_URL: unknown scheme {scheme!r} (use redis://, rediss://, unix://, redis+sentinel:// "
            "or redis+cluster://)"
        )
    rest, _, query = rest.partition("?")
    rest, _, _fragment = rest.partition("#")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, has_pw, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    ssl = scheme.startswith("rediss")
    if scheme.endswith("cluster"):
        if path.strip("/"):
            raise ConfigError("REDIS_URL: Redis Cluster has only database 0; remove the path")
        return RedisTarget(
            "cluster", nodes=_nodes(netloc, REDIS_PORT), username=username, password=password, ssl=ssl
        )
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ConfigError(
            "REDIS_URL: a Sentinel URL needs the master's name: redis+sentinel://h:26379/mymaster"
        )
    db = 0
    if len(parts) > 1:
        if not parts[1].isdigit():
            raise ConfigError("REDIS_URL: the database after the master's name must be a number")
        db = int(parts[1])
    return RedisTarget(
        "sentinel",
        nodes=_nodes(netloc, SENTINEL_PORT),
        service=unquote(parts[0]),
        db=db,
        username=username,
        password=password,
        ssl=ssl,
        sentinel_username=params.get("sentinel_username"),
        sentinel_password=params.get("sentinel_password"),
    )


def _retry() -> Retry:
    # A short retry on a dropped connection (a restart, a failover): long enough to ride out a blip,
    # short enough that a turn learns quickly that Redis is down and answers the persona's memory_error.
    return Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.5), retries=3)


CLIENT_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 3,
    "socket_timeout": 5,
}
try:  # redis-py 7.1+: resolved once here, or it reads its package metadata (importlib.metadata) for every
    # new pooled connection, ~3 ms of CPU each on the event loop, whenever a burst grows the pool.
    from redis.driver_info import DriverInfo

    CLIENT_OPTIONS["driver_info"] = DriverInfo()
except ImportError:  # older redis-py: no metadata read per connection either
    pass


@dataclass
class RedisConnection:
    """A client for the rest of Parley and what closes it (and any Sentinel connections)."""

    client: aioredis.Redis
    target: RedisTarget
    _closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    _closed: bool = False

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for close in reversed(self._closers):
            await close()

    async def __aenter__(self) -> RedisConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def connect(url: str, *, max_connections: int = 64) -> RedisConnection:
    """Build (not yet connect) the client for ``url``. Nothing is sent until the first command."""
    target = parse_redis_url(url)
    retry_errors = [RedisConnectionError, RedisTimeoutError, OSError]
    if target.kind == "standalone":
        try:
            # A blocking pool: under a burst, callers wait (up to 5 s) for a connection instead of failing,
            # and a process never opens more than ``max_connections`` sockets.
            pool = aioredis.BlockingConnectionPool.from_url(
                target.url,
                max_connections=max_connections,
                timeout=5,
                health_check_interval=30,
                retry=_retry(),
                retry_on_error=retry_errors,
                **CLIENT_OPTIONS,
            )
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL: {exc}") from None
        client = aioredis.Redis.from_pool(pool)
        return RedisConnection(client, target, [client.aclose])
    common: dict[str, Any] = {
        **CLIENT_OPTIONS,
        "max_connections": max_connections,
        "username": target.username,
        "password": target.password,
        "ssl": target.ssl,
        "retry": _retry(),
    }
    if target.kind == "cluster":
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            require_full_coverage=True,
            **common,
        )
        # RedisCluster is not a Redis subclass but offers the same command methods (module docstring).
        return RedisConnection(cast(aioredis.Redis, cluster), target, [cluster.aclose])
    sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": 3, "socket_timeout": 5}
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.sentinel_username:
        sentinel_kwargs["username"] = target.sentinel_username
    # redis-py before 8 carries no annotations on Sentinel.__init__ (8.x does: both pass).
    sentinel = Sentinel(target.nodes, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call,unused-ignore]
    client = sentinel.master_for(
        target.service, redis_class=aioredis.Redis, db=target.db, retry_on_error=retry_errors, **common
    )
    closers: list[Callable[[], Awaitable[Any]]] = [s.aclose for s in sentinel.sentinels]
    closers.append(client.aclose)
    return RedisConnection(client, target, closers)
