"""The model side of a conversation test: a scripted model (deterministic, no key, no server) and a recorder
that sees which tools the model (scripted or live) asked for.

:class:`ScriptedModel` is an :class:`~core.llm.LLM`: each chat request takes the next step of the turn's
script (text streamed in small pieces, or tool calls). The summary fold, which runs in the background when
a conversation grows, is answered with a fixed summary and takes no step. A request with no step left is an
error that names the turn, so a test author sees what to add.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from bots.convtest.cases import ModelStep
from core.errors import LLMRejected
from core.llm import LLM, LLMDelta, LLMEnd, LLMEvent, LLMRequest, LLMToolCalls, ToolCall
from core.prompt import SUMMARY_TASK
from core.types import Usage

CHUNK = 12  # characters per streamed piece: the engine's streaming and output checks see several deltas


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _is_fold(request: LLMRequest) -> bool:
    first = request.messages[0] if request.messages else None
    return first is not None and first.role == "system" and first.content.startswith(SUMMARY_TASK)


class ScriptExhausted(LLMRejected):
    """The model was asked more often than the turn's script says."""


@dataclass
class ScriptedModel:
    steps: list[ModelStep] = field(default_factory=list)
    where: str = ""  # "turn 2" for the error message
    used: int = 0
    exhausted: str = ""  # set when a request found no step

    def script(self, steps: Sequence[ModelStep], where: str) -> None:
        self.steps, self.where, self.used, self.exhausted = list(steps), where, 0, ""

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        prompt = sum(_tokens(m.content) for m in request.messages)
        if _is_fold(request):
            yield LLMDelta("Earlier: the user and the assistant talked (scripted summary).")
            yield LLMEnd("stop", Usage(prompt, 12))
            return
        if self.used >= len(self.steps):
            self.exhausted = (
                f"{self.where}: the model was asked {self.used + 1} time(s) but the script has "
                f"{len(self.steps)} step(s): add a `model` step (text or call) for request {self.used + 1}"
            )
            raise ScriptExhausted(self.exhausted)
        step = self.steps[self.used]
        self.used += 1
        if step.text:
            for start in range(0, len(step.text), CHUNK):
                yield LLMDelta(step.text[start : start + CHUNK])
            yield LLMEnd("stop", Usage(prompt, _tokens(step.text)))
            return
        calls = tuple(
            ToolCall(f"call_{self.used}_{i}", name, json.dumps(args))
            for i, (name, args) in enumerate(step.tool_calls())
        )
        yield LLMToolCalls(calls)
        yield LLMEnd("tool_calls", Usage(prompt, 10 * len(calls)))

    async def aclose(self) -> None:
        return None


@dataclass
class RecordingModel:
    """Wraps any LLM and keeps the tool calls it asks for (the name and the parsed arguments)."""

    inner: LLM
    calls: list[tuple[str, dict[str, object]]] = field(default_factory=list)

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        async for event in self.inner.stream(request):
            if isinstance(event, LLMToolCalls):
                for call in event.calls:
                    try:
                        args = json.loads(call.arguments or "{}")
                    except ValueError:
                        args = {}
                    self.calls.append((call.name, args if isinstance(args, dict) else {}))
            yield event

    async def aclose(self) -> None:
        await self.inner.aclose()
