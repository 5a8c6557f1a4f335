"""core/logging.py: the log lines `parley run` writes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from core.logging import configure_logging
from tests.conftest import make_settings


class Writes(io.StringIO):
    """A stream that keeps each write() call apart."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    config = structlog.get_config()
    yield
    structlog.configure(**config)


@pytest.mark.usefixtures("restore_logging")
def test_each_line_is_one_write_with_its_newline() -> None:
    # `parley run`'s worker processes share its stdout: a line and its newline written apart let another
    # process's line land between them (`{...}{...}` on one line: tests/scale/test_worker_processes.py).
    out = Writes()
    configure_logging(make_settings(parley_log_format="json"), out)
    log = structlog.get_logger("parley.test")
    log.info("first", n=1)
    log.warning("second", n=2)
    assert [json.loads(call)["event"] for call in out.calls] == ["first", "second"]
    assert all(call.endswith("\n") and call.count("\n") == 1 for call in out.calls)
