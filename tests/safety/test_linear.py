"""Every moderation rule runs in linear time: a guard against regexes and scans that go quadratic.

Not a speed target (those are printed by ``make bench-safety``): the budget is ~10x what a linear rule needs
on a loaded machine at 100 KB, and 10-400x less than the quadratic versions took ("x" + ".com."*N: 45 s,
"<@U1|"*N: 26 s, "eyJ"*N: 3 s).
"""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from core.bot import MAX_INPUT_CHARS, LimitsConfig
from core.moderation import Action
from core.safety.rules import STREAM_OVERLAP, stream_window_start
from tests.safety.conftest import SafetyFactory, make_turn
from tests.safety.pathological import cases, rules

SIZE = 100_000
BUDGET_SECONDS = 1.5


@pytest.mark.parametrize("rule", list(rules()))
def test_every_rule_is_linear_on_pathological_input(rule: str) -> None:
    check = rules()[rule]
    slow = []
    for name, text in cases(SIZE):
        started = time.perf_counter()
        check(text)
        elapsed = time.perf_counter() - started
        if elapsed > BUDGET_SECONDS:
            slow.append(f"{name}: {elapsed:.1f} s")
    assert not slow, f"{rule} is not linear on 100 KB of: {', '.join(slow)}"


def test_max_input_chars_has_an_upper_bound() -> None:
    assert LimitsConfig(max_input_chars=MAX_INPUT_CHARS).max_input_chars == MAX_INPUT_CHARS
    with pytest.raises(ValidationError, match="max_input_chars"):
        LimitsConfig(max_input_chars=MAX_INPUT_CHARS + 1)


def test_stream_window_starts_on_a_word_boundary_within_the_overlap() -> None:
    text = "word " * 1000
    assert stream_window_start(text, 100) == 0  # short replies: the whole text
    start = stream_window_start(text, 4000)
    assert 4000 - STREAM_OVERLAP <= start <= 4000 and text[start - 1] == " "
    unbroken = "x" * 5000  # no whitespace in the overlap: start at the new text
    assert stream_window_start(unbroken, 4000) == 4000


async def test_a_streamed_check_looks_at_the_new_text_and_the_overlap(safety_factory: SafetyFactory) -> None:
    moderation = {"blocked_patterns": [r"\bzebra-\d+\b"], "blocked_category": "launch_codes"}
    async with safety_factory("arcade", moderation=moderation) as rt:
        assert rt.safety is not None
        chain, turn = rt.safety.moderator, make_turn("hi", platform="discord")
        early = "zebra-42 " + "word " * 400  # the code is far before the new text: already checked
        verdict = await chain.check_output(turn, early + "more", final=False, since=len(early))
        assert verdict.action is Action.ALLOW and verdict.text == early + "more"
        straddling = "word " * 400 + "zeb"  # the code straddles the previous check's end
        verdict = await chain.check_output(turn, straddling + "ra-42 ok", final=False, since=len(straddling))
        assert verdict.action is Action.REFUSE and verdict.category == "launch_codes"
        verdict = await chain.check_output(turn, early + "more", final=True, since=len(early))
        assert verdict.action is Action.REFUSE  # the final check sees the whole reply
