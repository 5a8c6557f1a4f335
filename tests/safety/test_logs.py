"""The log processor: personal data and secrets never reach a log line, whatever the level or the key."""

from __future__ import annotations

import io
import json

import structlog

from core.safety.logs import redact_log_event


def test_every_string_in_a_log_event_is_redacted_tracebacks_included() -> None:
    out = io.StringIO()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            redact_log_event,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    try:
        log = structlog.get_logger("t")
        log.debug("user_said", note="mail me at ada@example.com", extra=["card 4111 1111 1111 1111"])
        try:
            raise ValueError("bad token xoxb-1234567890-abcdefghijkl")
        except ValueError:
            log.exception("failed", turn_id="abc123")
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    text = out.getvalue()
    assert "ada@example.com" not in text and "4111 1111" not in text and "xoxb-1234567890" not in text
    assert lines[0]["note"] == "mail me at [redacted email]" and lines[0]["extra"] == ["card [redacted card]"]
    assert "[redacted secret]" in lines[1]["exception"] and lines[1]["turn_id"] == "abc123"
