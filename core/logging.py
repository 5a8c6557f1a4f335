"""structlog set-up: JSON lines in production, a readable console in development.

Message bodies never appear at INFO or above: a processor drops the body-carrying keys there, so a
careless ``log.info(..., text=...)`` cannot leak a user's words into production logs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from core.safety.logs import redact_log_event
from core.settings import Settings

BODY_KEYS = frozenset({"text", "body", "content", "prompt", "reply", "messages", "summary"})
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40, "critical": 50}


def drop_bodies(_logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _LEVELS.get(method, 20) >= logging.INFO:
        for key in BODY_KEYS.intersection(event):
            event[key] = "[omitted]"
    return event


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Log to ``stream`` (stderr by default)."""
    out = stream or sys.stderr
    fmt = settings.parley_log_format
    if fmt == "auto":
        fmt = "json" if settings.parley_env == "production" or not out.isatty() else "console"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        # Plain tracebacks: rich's (when installed) would print every frame's locals, secrets included.
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            drop_bodies,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_log_event,  # personal data and tokens out of every field, tracebacks included
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, settings.parley_log_level)),
        # One write per line, its newline included (print() writes the two apart): the worker processes of
        # `parley run` share its stdout, and two processes' lines ran together (`{...}{...}`, JSON no
        # collector can read) when one's newline came after the other's line.
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
