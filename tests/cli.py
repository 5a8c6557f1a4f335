"""Run ``parley`` as a test needs it: in this process (``bots.cli.main`` on a worker thread: no interpreter to
start, no second import of the engine) or, for the few smoke tests per CLI area, as a real process.

In-process, ``main`` gets what a process would: its own environment (the developer's Parley, OpenAI, Redis
and platform variables left out), a scratch working directory (never the repository root: a developer's
.env there must not leak in), ``stdin`` from a string and ``stdout`` / ``stderr`` captured. Those are process
globals, so runs are serialised, and logging is put back afterwards (``main`` configures structlog for the
stream it was given, which is gone once the run ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from bots.cli import main

ROOT = Path(__file__).resolve().parents[1]
_DROPPED = ("OPENAI_", "REDIS_", "SLACK_", "DISCORD_")
_ONE_AT_A_TIME = threading.Lock()


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="parley-cli-"))


def cli_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ``parley`` runs with: this one without the variables a test must set itself."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED)}
    base.update({"TIKTOKEN_CACHE_DIR": "", "PARLEY_LOG_FORMAT": "json", "PARLEY_OPS_PORT": "0"})
    base.update(env or {})
    return base


def _run_main(argv: Sequence[str], stdin: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with _ONE_AT_A_TIME:
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        saved_streams = sys.stdin, sys.stdout, sys.stderr
        saved_logging = structlog.get_config()
        try:
            os.environ.clear()
            os.environ.update(env)
            os.chdir(cwd)
            sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved_streams
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            structlog.reset_defaults()
            structlog.configure(**saved_logging)
    return code, out.getvalue(), err.getvalue()


async def parley(
    *args: str,
    stdin: str = "",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    limit: float = 60,
) -> tuple[int, str, str]:
    """``parley ARGS`` in this process: (exit code, stdout, stderr)."""
    run = asyncio.to_thread(_run_main, args, stdin, cli_env(env), cwd or scratch())
    return await asyncio.wait_for(run, limit)


async def parley_process(
    *args: str,
    stdin: str = "",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    limit: float = 60,
) -> tuple[int, str, str]:
    """``python -m bots ARGS`` as a real process, for smoke tests: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**cli_env(env), "PYTHONPATH": str(ROOT)},
        cwd=cwd or scratch(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), limit)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
