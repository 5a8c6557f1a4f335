"""``parley run`` stops on SIGTERM whatever is down: Redis, Discord, both, the LLM (``--bot arcade``) and
Slack (``--bot support`` in Socket Mode), one test each (real processes against the fakes, in
tests/scale/shutdown_cases.py), handing back the turn it was answering where Redis allows.

Nothing here is timed: a hang fails on the cases' bound (30 s, for a loaded machine); the seconds are printed
(``pytest -s``), and ``make chaos`` prints them with the default grace (7 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scale.shutdown_cases import sigterm_with


@pytest.mark.parametrize(
    "gone",
    [
        # Both gone is the case that hung; the others each start a process too: `make chaos` runs them.
        "redis+discord",
        pytest.param("redis", marks=pytest.mark.chaos),
        pytest.param("discord", marks=pytest.mark.chaos),
        pytest.param("llm", marks=pytest.mark.chaos),
        pytest.param("slack", marks=pytest.mark.chaos),
    ],
)
@pytest.mark.slow
async def test_sigterm_ends_the_process_whatever_is_down(gone: str, tmp_path: Path) -> None:
    stopped = await sigterm_with(gone, tmp_path, grace=1.0)  # the default (7 s) is in `make chaos`
    print(f"{gone} gone: exited {stopped.seconds:.1f} s after SIGTERM (shut_down logged {stopped.logged} s)")
    assert stopped.returncode == 0, stopped.log[-3000:]
    assert '"shut_down"' in stopped.log
    if gone in ("discord", "slack"):  # Redis is up: the unanswered turn went back to the queue
        assert stopped.handed_back, stopped.log[-3000:]
