"""One route plan decides whether admission judges a turn and how the turn is routed (issue 18 item 4)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bots.loader import load_bot
from core.engine import Route, plan_route
from core.types import CommandCall, ReplyKind
from tests.conftest import RuntimeFactory
from tests.core.helpers import make_turn
from tests.fakes.openai_server import FakeOpenAI


@pytest.mark.parametrize(
    ("text", "addressed", "unaddressed", "command", "route"),
    [
        ("hello", True, False, False, Route.ANSWER),
        ("", True, False, False, Route.GREETING),
        ("hello", False, False, False, Route.IGNORE),
        ("hello", False, True, False, Route.ANSWER),
        ("", False, True, False, Route.IGNORE),  # nothing to answer: neither judged nor sent to the model
        ("", False, False, True, Route.COMMAND),
    ],
)
def test_the_plan(text: str, addressed: bool, unaddressed: bool, command: bool, route: Route) -> None:
    spec = load_bot("arcade")
    config = spec.config.model_copy(update={"answer_unaddressed": unaddressed})
    call = CommandCall("help", "") if command else None
    planned = plan_route(make_turn(text, addressed=addressed), call, config)
    assert planned is route
    assert planned.judged is (route in (Route.ANSWER, Route.COMMAND))


async def test_an_empty_unaddressed_turn_is_ignored_where_the_bot_answers_everything(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    # _judged said "not judged" and _route judged it anyway, then sent an empty turn to the model.
    spec = load_bot("arcade")
    spec = replace(spec, config=spec.config.model_copy(update={"answer_unaddressed": True}))
    async with runtime_factory(spec=spec) as rt:
        result = await rt.engine.collect(make_turn("   ", addressed=False))
    assert result.kind is ReplyKind.IGNORED and result.meta["reason"] == "empty"
    assert fake_openai.chat_requests == []
