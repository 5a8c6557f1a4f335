"""The one delivery path (adapters/common/deliver.py) driven by the real engine into a collecting delivery:
no platform server, every step's plain-text default, in order; and the steps' order and error policy."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator

from adapters.common.collect import Collected, CollectingDelivery, Said
from adapters.common.deliver import HANDOFF_TEXT, Shown
from adapters.console.chat import ConsoleChat, ConsoleOptions
from bots.loader import load_bot
from core.clicks import vote_call
from core.ops.jobs import Job, Route
from core.types import (
    Attachment,
    Author,
    Choice,
    CommandCall,
    Place,
    ReplyDone,
    ReplyEvent,
    ReplyKind,
    ReplyResult,
    Turn,
)
from tests.conftest import RuntimeFactory, without_limits
from tests.core.helpers import make_turn
from tests.fakes.openai_server import FakeOpenAI, Reply

TERMINAL = Place("console", "local", "me", "default")
PART = "Part 1: a lamp flickers.\n\nChoices:\n1. Go in\n2. Walk away"


def job(turn: Turn) -> Job:
    return Job(turn, Route("collect"))


async def test_a_handoff_is_announced_by_the_default_step(runtime_factory: RuntimeFactory) -> None:
    delivery = CollectingDelivery()
    async with runtime_factory("support") as rt:
        turn = make_turn("can I talk to a human please?")
        await delivery.deliver(job(turn), rt.engine.reply(turn))
    (result,) = delivery.collected.results
    assert result.handoff and result.kind is ReplyKind.ANSWER
    assert delivery.collected.texts == [result.text, HANDOFF_TEXT]


async def test_story_choices_and_a_stale_click_through_the_defaults(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    base = without_limits(load_bot("arcade"))
    story = base.config.story.model_copy(update={"branching": True})
    spec = dataclasses.replace(base, config=base.config.model_copy(update={"story": story}))
    fake_openai.queue(Reply(PART))
    delivery = CollectingDelivery()
    alice = Author("alice", "Alice")
    async with runtime_factory(spec=spec) as rt:
        start = Turn(alice, TERMINAL, "/story a lamp", command=CommandCall("story", "a lamp"))
        await delivery.deliver(job(start), rt.engine.reply(start))
        said = delivery.collected.texts
        assert said[-1] == "Vote with:\n/story 1: Go in\n/story 2: Walk away"
        (first, _) = delivery.collected.results[-1].choices
        # A button of another story: answered privately, and the story stays where it was.
        stale = vote_call(Choice("abc", first.round, 1))
        click = Turn(alice, TERMINAL, "/story 1", command=stale)
        asked = len(fake_openai.chat_requests)
        await delivery.deliver(job(click), rt.engine.reply(click))
        last = delivery.collected.said[-1]
        assert last.private and last.text.startswith("That vote has closed")
        assert len(fake_openai.chat_requests) == asked
        state = await rt.engine.story.load(TERMINAL)  # type: ignore[union-attr]
        assert state is not None and state.round == first.round and state.id == first.story


class _Steps(CollectingDelivery):
    """Files fail; everything after them must still run, in the documented order."""

    async def files(self, job: Job, target: Collected, shown: Shown, files: tuple[Attachment, ...]) -> None:
        raise OSError("disk full")

    async def retire(self, job: Job, target: Collected, controls: tuple[str, ...]) -> None:
        target.said.append(Said("retired " + ",".join(controls)))


async def _once(result: ReplyResult) -> AsyncIterator[ReplyEvent]:
    yield ReplyDone(result)


async def test_steps_run_in_order_and_a_failing_step_does_not_stop_the_rest() -> None:
    turn = make_turn("x")
    result = ReplyResult(
        turn.turn_id,
        ReplyKind.ANSWER,
        "the text",
        attachments=(Attachment("a.png", "image/png", b"png"),),
        choices=(Choice("ab12", 3, 1, "left"),),
        handoff=True,
        retire=("story",),
    )
    delivery = _Steps()
    await delivery.deliver(job(turn), _once(result))
    assert delivery.collected.texts == [
        "the text",
        "retired story",
        "Vote with:\n/story 1: left",
        HANDOFF_TEXT,
    ]
    assert delivery.delivered == 1


async def test_the_terminal_shows_a_handoff(runtime_factory: RuntimeFactory) -> None:
    """Issue 18: only Slack showed a handoff; the terminal now says it too."""
    out = io.StringIO()
    async with runtime_factory("support") as rt:
        chat = ConsoleChat(rt.bot, rt.engine.reply, ConsoleOptions(), stdout=out)
        result = await chat.say("can I talk to a human please?")
    assert result.handoff
    assert f"[{HANDOFF_TEXT}]" in out.getvalue()
