"""Redis from one setting: standalone, Sentinel or Cluster, chosen by the scheme of ``REDIS_URL``.

    redis://[[user]:password@]host[:port][/db]          standalone (also rediss:// and unix:///path.sock)
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=...]
    redis+cluster://[[user]:password@]host[:port][,host[:port]...]

Sentinel may also be given as settings: ``REDIS_SENTINELS=h1:26379,h2:26379``, ``REDIS_SENTINEL_MASTER=name``,
``REDIS_PASSWORD`` (data nodes) and ``REDIS_SENTINEL_PASSWORD`` (:func:`settings_target`).
``rediss+sentinel://`` and ``rediss+cluster://`` use TLS to the data nodes. Credentials in the URL are the
data nodes'; ``sentinel_password`` (and ``sentinel_username``) authenticate to the Sentinels. Sentinel
clients follow a failover by themselves; Cluster clients follow slot moves. Every key of one conversation
carries the conversation's ``{hash tag}`` (core.keys), so its scripts and transactions stay in one slot.

A cluster client is handed out typed as :class:`redis.asyncio.Redis`: ``RedisCluster`` implements the same
command methods (it is not a subclass), and every caller in Parley sticks to commands both provide.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ClusterDownError, MasterDownError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import ConfigError
from core.settings import Settings

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


def settings_target(settings: Settings) -> RedisTarget | None:
    """Where Redis is, from the settings: REDIS_URL, or REDIS_SENTINELS + REDIS_SENTINEL_MASTER; ``None``
    when neither is set (an embedded redis-server then)."""
    if settings.redis_sentinels is not None:
        assert settings.redis_sentinel_master is not None  # Settings checks it
        password, sentinel_password = settings.redis_password, settings.redis_sentinel_password
        return RedisTarget(
            "sentinel",
            nodes=_nodes(settings.redis_sentinels, SENTINEL_PORT),
            service=settings.redis_sentinel_master,
            password=password.get_secret_value() if password else None,
            sentinel_password=sentinel_password.get_secret_value() if sentinel_password else None,
        )
    if settings.redis_url is not None:
        return parse_redis_url(settings.redis_url.get_secret_value())
    return None


def _retry(failover_wait: float = 0.0, cap: float = 0.5) -> Retry:
    # Standalone: a short retry on a dropped connection (a restart): long enough to ride out a blip, short
    # enough that a turn learns quickly that Redis is down and answers the persona's memory_error.
    # Sentinel and Cluster: long enough to ride out a failover (a replica promoted), ``failover_wait`` s.
    # A jittered back-off waits cap / 2 on average once it reaches the cap: twice the attempts cover the wait.
    retries = max(3, math.ceil(2 * failover_wait / cap))
    return Retry(ExponentialWithJitterBackoff(base=0.02, cap=cap), retries=retries)


# What a cluster says while a master is down and its replica not yet promoted.
_FAILOVER_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
    MasterDownError,
    OSError,
)


async def _wait_out(call: Callable[[], Awaitable[Any]], wait: float, before_retry: Callable[[], None]) -> Any:
    """Run ``call``; on a failover error retry with back-off for up to ``wait`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.05
    while True:
        try:
            return await call()
        except _FAILOVER_ERRORS:
            if loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            before_retry()


class FailoverPipeline(Pipeline):
    """A Sentinel client's pipeline that waits out a failover like :class:`FailoverSentinelRedis`."""

    failover_wait: float = 10.0

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack = list(self.command_stack)  # execute() empties it, even when it fails

        def again() -> None:
            self.command_stack = list(stack)

        return list(
            await _wait_out(
                lambda: super(FailoverPipeline, self).execute(raise_on_error), self.failover_wait, again
            )
        )


class FailoverSentinelRedis(aioredis.Redis):
    """The Sentinel master's client. redis-py's own retries reconnect to the *cached* address of the dead
    master for their whole budget (then the command fails); a command that fails fast and is sent again
    asks the Sentinels for the new master. So: fail fast, and retry here with back-off for up to
    ``failover_wait`` seconds (a promotion takes down-after-milliseconds plus the election)."""

    failover_wait: float = 10.0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await _wait_out(
            lambda: super(FailoverSentinelRedis, self).execute_command(*args, **options),  # type: ignore[no-untyped-call]
            self.failover_wait,
            lambda: None,
        )

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> FailoverPipeline:
        pipe = FailoverPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.failover_wait = self.failover_wait
        return pipe


def _torn_down(exc: AttributeError) -> RedisConnectionError:
    """redis-py's race under a failover: another task tore a node's connection down between a command's
    connect check and its write ("'NoneType' object has no attribute 'writelines'"). A broken connection, as
    callers know it, not a crash of the caller (it ended a worker's TaskGroup under load); re-raised as is
    when it is some other AttributeError."""
    if "NoneType" not in str(exc):
        raise exc
    return RedisConnectionError(f"the connection closed under a command ({exc})")


class FailoverClusterPipeline(ClusterPipeline):
    """A cluster pipeline whose commands meet the same race as single commands (:func:`_torn_down`)."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except AttributeError as exc:
            raise _torn_down(exc) from exc


class FailoverCluster(RedisCluster):
    """A cluster client that waits out a master's failover (up to ``failover_wait`` seconds, backing off)
    instead of failing at once: redis-py retries a single command without a pause, so every retry lands
    before the replica is promoted. Pipelines wait through the client's ``retry`` (0.25 s per attempt)."""

    failover_wait: float = 10.0

    async def _determine_slot(self, command: str, *args: Any) -> int:
        # redis-py asks the server (COMMAND GETKEYS: one more round trip) where a "movable keys" command's
        # keys are; XREADGROUP, called for every turn, names its one stream after STREAMS.
        if command.upper() == "XREADGROUP":
            words = [a.decode() if isinstance(a, bytes) else str(a) for a in args]
            words = [w.upper() for w in words]
            if "STREAMS" in words:
                return int(self.keyslot(args[words.index("STREAMS") + 1]))
        return int(await super()._determine_slot(command, *args))

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:  # (as RedisCluster.pipeline says)
            return super().pipeline(transaction, shard_hint)
        return FailoverClusterPipeline(self, transaction)  # type: ignore[abstract]  # (as redis-py builds it)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.failover_wait
        delay = 0.05
        while True:
            try:
                try:
                    return await super().execute_command(*args, **kwargs)
                except AttributeError as exc:
                    raise _torn_down(exc) from exc
            except _FAILOVER_ERRORS:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)


CLIENT_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 3,
    "socket_timeout": 5,
}
# A new pooled connection (a burst grows the pool: 32 turns at once open ~30) costs its round trips before its
# first command; redis-py 8 sends four: PING (its health check, on a connection made that instant), HELLO 3,
# CLIENT MAINT_NOTIFICATIONS (Redis Enterprise's; open-source servers answer an error) and CLIENT SETINFO
# (lib name and version, pipelined). Only HELLO is kept (the protocol); the PING goes in _FreshIsHealthy.
try:  # redis-py 7.1+: also resolved once here, or it reads its package metadata (importlib.metadata) for
    # every new pooled connection, ~3 ms of CPU each on the event loop
    from redis.driver_info import DriverInfo

    CLIENT_OPTIONS["driver_info"] = DriverInfo(name=None, lib_version=None)
except ImportError:  # older redis-py: no metadata read per connection either
    pass
try:
    from redis.maint_notifications import MaintNotificationsConfig

    CLIENT_OPTIONS["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
except ImportError:  # older redis-py: no such handshake
    pass


class _FreshIsHealthy:
    """A pooled connection's health check (a PING after ``health_check_interval`` idle seconds) starts
    counting when it connects: redis-py would PING before the first command of a connection just made."""

    health_check_interval: float
    next_health_check: float

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        if self.health_check_interval:
            self.next_health_check = asyncio.get_running_loop().time() + self.health_check_interval
        await super().on_connect_check_health(check_health)  # type: ignore[misc]


_fresh_classes: dict[type[Any], type[Any]] = {}


def _fresh_is_healthy(cls: type[Any]) -> type[Any]:
    """``cls`` (TCP, TLS or unix socket, as the URL chose) with :class:`_FreshIsHealthy` (one per class)."""
    if cls not in _fresh_classes:
        _fresh_classes[cls] = type(f"Fresh{cls.__name__}", (_FreshIsHealthy, cls), {})
    return _fresh_classes[cls]


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


def connect(
    url: str | RedisTarget, *, max_connections: int = 64, failover_wait: float = 10.0
) -> RedisConnection:
    """Build (not yet connect) the client for ``url``. Nothing is sent until the first command.
    Sentinel and Cluster clients wait up to ``failover_wait`` seconds for a failover to complete."""
    target = parse_redis_url(url) if isinstance(url, str) else url
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
        if hasattr(pool.connection_class, "on_connect_check_health"):
            pool.connection_class = _fresh_is_healthy(pool.connection_class)
        client = aioredis.Redis.from_pool(pool)
        return RedisConnection(client, target, [client.aclose])
    common: dict[str, Any] = {
        **CLIENT_OPTIONS,
        "max_connections": max_connections,
        "username": target.username,
        "password": target.password,
        "ssl": target.ssl,
        "retry": _retry(failover_wait),
    }
    if target.kind == "cluster":
        cluster = FailoverCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            require_full_coverage=True,
            **{**common, "retry": _retry(failover_wait, cap=0.25)},
        )
        cluster.failover_wait = failover_wait
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
        target.service,
        redis_class=FailoverSentinelRedis,
        db=target.db,
        retry_on_error=retry_errors,
        **{**common, "retry": _retry()},  # fail fast: FailoverSentinelRedis retries via the Sentinels
    )
    client.failover_wait = failover_wait
    closers: list[Callable[[], Awaitable[Any]]] = [s.aclose for s in sentinel.sentinels]
    closers.append(client.aclose)
    return RedisConnection(client, target, closers)
