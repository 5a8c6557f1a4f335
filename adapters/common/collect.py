"""A delivery that keeps what it would show, for tests of the engine without a platform (Rasa's
``CollectingOutputChannel``): every step's plain-text default, recorded in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from adapters.common.deliver import ReplyDelivery, Shown
from core.ops.jobs import Job
from core.reply import ReplyFold
from core.types import ReplyEvent, ReplyResult


@dataclass(frozen=True, slots=True)
class Said:
    text: str
    private: bool = False


@dataclass
class Collected:
    said: list[Said] = field(default_factory=list)  # the reply's text, then each step's lines
    results: list[ReplyResult] = field(default_factory=list)  # one per reply

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.said]


class CollectingDelivery(ReplyDelivery[Collected]):
    """Registered as the delivery of any platform name; ``collected`` holds what each reply showed."""

    platform = "collect"

    def __init__(self) -> None:
        super().__init__()
        self.collected = Collected()

    async def target(self, job: Job) -> Collected:
        return self.collected

    async def text(self, job: Job, target: Collected, events: AsyncIterator[ReplyEvent]) -> Shown:
        fold = ReplyFold()
        async for event in events:
            fold.add(event)
        result = fold.outcome()
        if result.text:
            target.said.append(Said(result.text, private=result.ephemeral))
        target.results.append(result)
        return Shown(result)

    async def say(self, job: Job, target: Collected, text: str, *, private: bool = False) -> None:
        target.said.append(Said(text, private=private))

    async def aclose(self) -> None:
        return None
