"""Every tool call, recorded three ways: the safety event stream (``/safety events``), a log line and
Prometheus. Arguments are redacted and cut short first; results are never recorded."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import structlog

from core.ops.metrics import Metrics
from core.safety.events import Decision, EventLog
from core.tools.fence import Redact
from core.types import Turn

log = structlog.get_logger("parley.tools")

ARGS_CHARS = 300


class ToolAudit:
    def __init__(self, *, events: EventLog | None, metrics: Metrics | None, redact: Redact) -> None:
        self.events = events
        self.metrics = metrics
        self._redact = redact

    def args_text(self, arguments: Mapping[str, Any] | str) -> str:
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        text = self._redact(raw)
        return text if len(text) <= ARGS_CHARS else text[:ARGS_CHARS] + "…"

    async def record(
        self,
        turn: Turn,
        *,
        tool: str,
        source: str,
        arguments: Mapping[str, Any] | str,
        outcome: str,
        seconds: float = 0.0,
        detail: str = "",
    ) -> None:
        args = self.args_text(arguments)
        ms = round(seconds * 1000, 1)
        log.info(
            "tool_call",
            tool=tool,
            source=source,
            outcome=outcome,
            ms=ms,
            args=args,
            detail=detail,
            turn_id=turn.turn_id,
            platform=turn.place.platform,
            workspace=turn.place.workspace,
            channel=turn.place.channel,
            user=turn.author.id,
        )
        if self.metrics is not None:
            self.metrics.observe_tool(tool, outcome, seconds)
        if self.events is not None:
            note = f"ms={ms} args={args}" + (f" ({detail})" if detail else "")
            await self.events.record(turn, [Decision("tool", tool, outcome, source, note)])
