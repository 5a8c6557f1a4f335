"""Redis topologies from one REDIS_URL: parsing, and live Sentinel and (single-node) Cluster servers."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.bot import BotSpec
from core.errors import ConfigError
from core.ops.delivery import DispatchOutcome
from core.ops.redisconn import connect, parse_redis_url
from core.redis_server import RedisServer, find_redis_server, free_port
from core.runtime import open_runtime
from tests.conftest import make_app, make_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.scale.helpers import FAST, MemoryDelivery, running_worker, scale_spec, turn

# ---------------------------------------------------------------------- parsing (pure)


def test_standalone_urls_pass_through() -> None:
    for url in ("redis://h:6379/0", "rediss://:pw@h/1", "unix:///tmp/r.sock?db=2"):
        target = parse_redis_url(url)
        assert (target.kind, target.url) == ("standalone", url)


def test_sentinel_urls() -> None:
    target = parse_redis_url(
        "redis+sentinel://user:s%40cret@s1:26380,s2,[::1]:26381/mymaster/3?sentinel_password=x"
    )
    assert target.kind == "sentinel"
    assert target.nodes == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert (target.service, target.db, target.username, target.password) == ("mymaster", 3, "user", "s@cret")
    assert target.sentinel_password == "x"
    assert "s@cret" not in str(target)
    assert "s@cret" not in repr(target)
    assert parse_redis_url("rediss+sentinel://s1/m").ssl


def test_cluster_urls() -> None:
    target = parse_redis_url("redis+cluster://:pw@n1:7000,n2:7001")
    assert (target.kind, target.nodes, target.password) == ("cluster", (("n1", 7000), ("n2", 7001)), "pw")


@pytest.mark.parametrize("message", ["'NoneType' object has no attribute 'writelines'", "other bug"])
async def test_a_cluster_pipeline_whose_connection_is_torn_down_under_it_fails_as_a_connection_error(
    monkeypatch: pytest.MonkeyPatch, message: str
) -> None:
    from redis.asyncio.cluster import ClusterPipeline

    from core.ops.redisconn import FailoverClusterPipeline

    async def torn_down(*_args: object, **_kwargs: object) -> list[object]:  # redis-py's race (failover)
        raise AttributeError(message)

    monkeypatch.setattr(ClusterPipeline, "execute", torn_down)
    conn = connect("redis+cluster://127.0.0.1:1")  # built, never connected
    pipe = conn.client.pipeline(transaction=False)
    assert isinstance(pipe, FailoverClusterPipeline)
    expected = redis.exceptions.ConnectionError if "NoneType" in message else AttributeError
    with pytest.raises(expected):  # a broken connection as callers handle it; any other bug stays a bug
        await pipe.execute()
    await conn.aclose()


async def test_a_new_pooled_connection_costs_one_round_trip_before_its_first_command(redis_url: str) -> None:
    """A burst grows the pool by a connection per waiting command: each used to send PING, HELLO, CLIENT
    MAINT_NOTIFICATIONS and CLIENT SETINFO before its command. Counted by the server."""
    watcher = redis.Redis.from_url(redis_url)
    try:
        watcher.config_resetstat()
        conn = connect(redis_url)
        try:
            await conn.client.set("k", "v")
            await conn.client.get("k")
        finally:
            await conn.aclose()
        calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in watcher.info("commandstats").items()}
    finally:
        watcher.close()
    for own in ("info", "config", "config|resetstat"):  # the watcher's own
        calls.pop(own, None)
    assert calls == {"hello": 1, "set": 1, "get": 1}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("localhost:6379", "expected a URL"),
        ("memcached://h", "unknown scheme"),
        ("redis+sentinel://s1:26379", "needs the master's name"),
        ("redis+sentinel://s1/m/x", "must be a number"),
        ("redis+cluster://n1:7000/1", "only database 0"),
        ("redis+cluster://n1:port", "bad host:port"),
        ("redis+cluster://:secret@", "no host"),
    ],
)
def test_bad_urls_name_the_problem_never_the_password(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        parse_redis_url(url)
    assert "secret" not in str(info.value)


# ---------------------------------------------------------------------- live servers


class Proc:
    """A redis-server (or sentinel) child with its own arguments, waited on until it answers PING."""

    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.port = port
        self._log = log.open("wb")
        self.proc = subprocess.Popen([find_redis_server(), *args], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=port, socket_connect_timeout=0.2) as client:
                    client.ping()
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise AssertionError(
                        f"redis-server {args} did not start: {log.read_text()[-500:]}"
                    ) from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[RedisServer, Proc]]:
    master = RedisServer(tmp_path / "master", tcp=True, appendonly=False).start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"  # a sentinel rewrites its config file: it must be writable
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor parley 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds parley 5000\n"
    )
    proc = Proc([str(conf), "--sentinel"], port, tmp_path / "sentinel.log")
    try:
        yield master, proc
    finally:
        proc.stop()
        master.stop()


async def answer_through_the_queue(
    url: str, llm: FakeOpenAI, tmp_path: Path, spec: BotSpec | None = None
) -> list[str]:
    """Open a runtime on ``url``, run two queued turns through a worker, return the stored memory."""
    settings = make_settings(
        redis_url=url,
        openai_base_url=llm.base_url,
        openai_api_key="k",
        parley_data_dir=tmp_path / "d",
        **FAST,
    )
    delivery = MemoryDelivery()
    async with open_runtime(spec or scale_spec(), make_app(settings)) as rt:
        rt.ops.deliveries.register("test", delivery)
        async with running_worker(rt):
            for text in ("hello", "again"):
                outcome = await rt.dispatcher.dispatch(turn(text, event_id=f"ev-{text}"))
                assert outcome.outcome is DispatchOutcome.QUEUED
            assert (
                await rt.dispatcher.dispatch(turn("hello", event_id="ev-hello"))
            ).outcome is DispatchOutcome.DUPLICATE
            await delivery.wait_for(2)
        state = await rt.engine.memory.load(turn("x").place, tail=10)
    assert [d.text for d in delivery.delivered] == ["You said: hello", "You said: again"]
    return [m.text for m in state.messages]


async def test_sentinel_url_finds_the_master_and_serves_turns(
    sentinel: tuple[RedisServer, Proc], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    master, proc = sentinel
    async with connect(f"redis+sentinel://127.0.0.1:{proc.port}/parley/0") as connection:
        await connection.client.set("probe", "1")
        assert await connection.client.get("probe") == "1"
    with redis.Redis(port=master.port, decode_responses=True) as direct:
        assert direct.get("probe") == "1"  # it went to the master the sentinel named
    memory = await answer_through_the_queue(
        f"redis+sentinel://127.0.0.1:{proc.port}/parley", fake_openai, tmp_path
    )
    assert memory == ["hello", "You said: hello", "again", "You said: again"]


async def test_a_runtime_opens_its_warm_redis_connections_at_start(redis_url: str, tmp_path: Path) -> None:
    """PARLEY_REDIS_WARM_CONNECTIONS: the pool is open before the first burst (counted by the server)."""
    watcher = redis.Redis.from_url(redis_url)
    try:
        before = len(watcher.client_list())
        settings = make_settings(
            redis_url=redis_url,
            openai_base_url="http://127.0.0.1:9/v1",  # never called
            parley_data_dir=tmp_path,
            parley_redis_warm_connections=6,
        )
        async with open_runtime(scale_spec(), make_app(settings)):  # type: ignore[arg-type]
            opened = len(watcher.client_list()) - before
    finally:
        watcher.close()
    assert opened >= 6
