"""``parley run`` keeps start-up's objects out of the cyclic collector's full passes (gc.freeze)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_CODE = """
import gc
import core.runtime  # what start-up imports, among the rest
from core.ops.service import freeze_startup_objects
frozen = freeze_startup_objects()
assert frozen == gc.get_freeze_count() > 10_000, frozen
print(frozen)
"""


def test_start_up_objects_are_frozen_after_a_collection() -> None:
    # In a process of its own: freezing the test process would keep its garbage for good.
    done = subprocess.run(
        [sys.executable, "-c", _CODE], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 10_000
