"""More worker processes on one host (``PARLEY_WORKER_PROCESSES``): ``parley run`` starts and supervises the
extra ``parley run --workers-only`` processes, so that a burst of turns is worked on by more than one event
loop (one core each).

- Each child gets ``PARLEY_WORKER_PROCESSES=1`` (no grandchildren), ``PORT=0`` and its own ops port
  (``PARLEY_OPS_PORT`` + its index, or 0 when the parent's is 0): health and ``/metrics`` per process.
- A child that exits while the parent serves is logged (``worker_process_exited``: index, pid, exit code)
  and started again after a back-off: 1 s, doubling up to 30 s, back to 1 s once a child ran a minute.
- Shutdown: the children get SIGTERM as soon as the parent's shutdown begins, so each runs its own
  graceful shutdown (``PARLEY_SHUTDOWN_GRACE``, handing back what it cannot finish) beside the parent's;
  a child still running at the parent's closing deadline is killed (``worker_process_killed``).
- Linux: a child also gets SIGTERM when the parent dies (``PR_SET_PDEATHSIG``): none outlives a SIGKILLed
  parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Mapping, Sequence

import structlog

log = structlog.get_logger("parley.processes")
STABLE_AFTER = 60.0  # seconds a child must run for the restart back-off to start again from its minimum
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def child_env(base: Mapping[str, str], index: int, ops_port: int) -> dict[str, str]:
    """The environment of child ``index`` (1, 2, ...): the parent's, one process per child, its own ports."""
    env = dict(base)
    env["PARLEY_WORKER_PROCESSES"] = "1"
    env["PORT"] = "0"  # the platforms' HTTP endpoints are the parent's
    env["PARLEY_OPS_PORT"] = str(ops_port + index if ops_port else 0)
    return env


class WorkerProcesses:
    """``count`` child processes running ``argv``, kept running until :meth:`serve` is cancelled."""

    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        *,
        ops_port: int = 0,
        env: Mapping[str, str] | None = None,
        restart_after: float = 1.0,
        restart_max: float = 30.0,
    ) -> None:
        self.argv = list(argv)
        self.count = count
        self._ops_port = ops_port
        self._env = dict(os.environ if env is None else env)
        self._restart_after = restart_after
        self._restart_max = restart_max
        self._live: dict[int, asyncio.subprocess.Process] = {}  # index -> running child

    async def serve(self) -> None:
        """Start the children and restart any that exits; on cancellation (shutdown) SIGTERM them all."""
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(1, self.count + 1):
                    group.create_task(self._keep(index), name=f"worker-process-{index}")
        finally:
            self._signal(signal.SIGTERM)

    async def _keep(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        delay = self._restart_after
        while True:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=child_env(self._env, index, self._ops_port),
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
            self._live[index] = proc
            started = loop.time()
            log.info("worker_process_started", index=index, pid=proc.pid)
            code = await proc.wait()  # cancelled at shutdown: serve() signals it, aclose() waits for it
            del self._live[index]
            if loop.time() - started >= STABLE_AFTER:
                delay = self._restart_after
            log.warning("worker_process_exited", index=index, pid=proc.pid, code=code, restart_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._restart_max)

    def _signal(self, sig: signal.Signals) -> None:
        for proc in self._live.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def aclose(self) -> None:
        """Wait for the children to exit after their SIGTERM (the caller bounds the wait); kill the rest."""
        self._signal(signal.SIGTERM)  # (again: harmless; serve() may not have been cancelled)
        live = dict(self._live)
        try:
            for index, proc in live.items():
                code = await proc.wait()
                log.info("worker_process_stopped", index=index, pid=proc.pid, code=code)
        finally:
            for index, proc in live.items():
                if proc.returncode is None:
                    log.warning("worker_process_killed", index=index, pid=proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            self._live.clear()
