"""``parley run``: serve a bot's adapters and/or queue workers until SIGTERM, then shut down gracefully.

Shutdown, within ``PARLEY_SHUTDOWN_GRACE`` seconds of the signal:

1. ``/readyz`` turns 503 (load balancers stop sending) and the adapters' ``serve()`` tasks are cancelled:
   no new events are taken. An adapter keeps its platform clients open until ``aclose()``, so replies still
   in flight can be shown. Extra worker processes (``PARLEY_WORKER_PROCESSES``) get SIGTERM now: each runs
   its own graceful shutdown beside this one, and is waited for (killed at the deadline) in step 4.
2. The worker stops reading; running turns get what is left of the grace period, then are cancelled and
   handed back to the queue (lock released, fresh signal): another replica answers them.
3. Turns answered directly (queue off, or Redis was down) get the rest of the grace period.
4. Adapters are closed, then the HTTP server; the runtime closes Redis and the LLM client.

Closing (steps 2's hand-back and 4) is bounded too (``CLOSE_WITHIN`` seconds past the grace period), so the
process ends within the grace period plus a couple of seconds whatever is down (Redis, the platform, the LLM).
A second SIGTERM/SIGINT skips the waiting.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from core.ops.worker import TurnWorker, drain_within

if TYPE_CHECKING:
    from core.ops.processes import WorkerProcesses
    from core.runtime import Runtime

log = structlog.get_logger("parley.service")
CLOSE_WITHIN = 2.0  # seconds past the grace period for handing back and closing (a dead peer never answers)


class Servable(Protocol):
    async def serve(self) -> None: ...

    async def aclose(self) -> None: ...


def freeze_startup_objects() -> int:
    """Keep what start-up built (modules, the runtime, a knowledge index: ~220k objects) out of the cyclic
    collector's full passes, which walk every tracked object: ~140 ms of CPU each, landing on whichever reply
    allocates at the time. Start-up's garbage goes first (a frozen cycle is never freed). Returns how many
    objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def serve(
    rt: Runtime,
    adapters: Sequence[tuple[str, Servable]] = (),
    *,
    workers: bool = True,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    processes: WorkerProcesses | None = None,
) -> int:
    """Run until ``stop`` is set (or SIGTERM/SIGINT), an adapter fails, or the worker dies. ``processes``:
    the extra worker processes this one starts and supervises."""
    stop = stop or asyncio.Event()
    hurry = asyncio.Event()
    loop = asyncio.get_running_loop()
    slog = log.bind(bot=rt.bot.name)

    def on_signal(signame: str) -> None:
        if stop.is_set():
            slog.warning("second_signal_hurrying", signal=signame)
            hurry.set()
        else:
            slog.info("signal_received", signal=signame)
            stop.set()

    installed: list[signal.Signals] = []
    # Only the main thread may take signals (``parley`` run in-process by a test or an embedding program is on
    # another thread, and stops through ``stop``).
    # The same test tells whether this is ``parley run``'s own process: only then is start-up frozen.
    own_process = handle_signals and threading.current_thread() is threading.main_thread()
    if own_process:
        freeze_startup_objects()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)

    worker = rt.ops.worker(rt.engine) if workers else None
    started: list[asyncio.Task[Any]] = []
    adapter_tasks: list[asyncio.Task[None]] = []
    worker_task: asyncio.Task[None] | None = None
    stop_task: asyncio.Task[Any] = asyncio.create_task(stop.wait(), name="stop")
    failure: BaseException | None = None
    try:
        await rt.ops.http.start()
        if worker is not None:
            worker_task = asyncio.create_task(worker.run(), name="worker")
            started.append(worker_task)
        for platform, adapter in adapters:
            task = asyncio.create_task(adapter.serve(), name=f"adapter:{platform}")
            adapter_tasks.append(task)
            started.append(task)
        if processes is not None:  # stopped with the adapters: SIGTERM as the shutdown begins
            task = asyncio.create_task(processes.serve(), name="worker-processes")
            adapter_tasks.append(task)
            started.append(task)
        slog.info(
            "serving",
            adapters=[p for p, _ in adapters],
            worker=worker.name if worker else None,
            worker_processes=processes.count if processes else 0,
            http=rt.ops.http.bound,
        )
        done, _ = await asyncio.wait({stop_task, *started}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_task and not task.cancelled() and task.exception() is not None:
                failure = task.exception()
                slog.error("service_part_failed", part=task.get_name(), error=repr(failure))
                break
            if task is not stop_task:
                slog.warning("service_part_ended", part=task.get_name())
    finally:
        await _shutdown(rt, adapters, adapter_tasks, worker, worker_task, hurry, slog, processes)
        stop_task.cancel()
        await asyncio.wait({stop_task})
        for sig in installed:
            loop.remove_signal_handler(sig)
    if failure is not None:
        raise failure
    return 0


async def _shutdown(
    rt: Runtime,
    adapters: Sequence[tuple[str, Servable]],
    adapter_tasks: list[asyncio.Task[None]],
    worker: TurnWorker | None,
    worker_task: asyncio.Task[None] | None,
    hurry: asyncio.Event,
    slog: Any,
    processes: WorkerProcesses | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    grace = rt.settings.parley_shutdown_grace
    deadline = loop.time() + grace
    slog.info("shutting_down", grace=grace)
    rt.ops.http.draining = True

    def left() -> float:
        return 0.0 if hurry.is_set() else max(0.0, deadline - loop.time())

    def closing() -> float:  # what is left of the grace period plus the closing allowance
        return max(0.2, (loop.time() if hurry.is_set() else deadline) + CLOSE_WITHIN - loop.time())

    async def bounded(step: Awaitable[object], part: str) -> None:
        try:
            async with asyncio.timeout(closing()):
                await step
        except TimeoutError:
            slog.warning("close_timed_out", part=part)
        except Exception as exc:  # one part failing to close must not keep the others open
            slog.warning("close_failed", part=part, error=repr(exc))

    # 1. No new events.
    for task in adapter_tasks:
        task.cancel()
    if adapter_tasks:  # bounded: a platform client reconnecting to a dead peer may be slow to let go
        _done, slow = await asyncio.wait(adapter_tasks, timeout=CLOSE_WITHIN)
        for task in slow:
            slog.warning("close_timed_out", part=task.get_name())
    # 2. Workers: finish, or hand back to the queue.
    if worker is not None:
        await bounded(worker.shutdown(left(), hurry), "worker")
    if worker_task is not None:
        worker_task.cancel()
        await asyncio.wait({worker_task})
    # 3. Turns answered in this process.
    await drain_within(rt.dispatcher.tasks, left(), hurry)
    await bounded(rt.dispatcher.aclose(), "dispatcher")
    # 4. Close (the adapters' own grace periods are cut to what is left).
    for platform, adapter in adapters:
        await bounded(adapter.aclose(), f"adapter:{platform}")
    if processes is not None:
        await bounded(processes.aclose(), "worker-processes")
    await bounded(rt.ops.http.aclose(), "http")
    slog.info("shut_down", seconds=round(loop.time() - deadline + grace, 2))
