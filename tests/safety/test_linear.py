"""Every moderation rule runs in linear time: a guard against regexes and scans that go quadratic.

Not a speed target (those are printed by ``make bench-safety``) and not a wall-clock budget (a busy machine
made that flaky): each rule runs on 12.5 KB and on 4x that, timed in this thread's own CPU time, and must not
grow by more than 8x (linear grows 4x, quadratic 16x). Times under 50 ms are below the noise and pass. The
quadratic versions this guards against took 45 s ("x" + ".com."*N), 26 s ("<@U1|"*N) and 3 s ("eyJ"*N) at
100 KB.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from core.bot import MAX_INPUT_CHARS, LimitsConfig
from core.moderation import Action
from core.safety.rules import STREAM_OVERLAP, stream_window_start
from tests.safety.conftest import SafetyFactory, make_turn
from tests.safety.pathological import cases, rules

SMALL = 12_500
GROWTH = 4
MAX_RATIO = 8.0
NOISE_SECONDS = 0.05


def _cpu_seconds(check: Callable[[str], object], text: str) -> float:
    """Seconds of this thread's CPU time (other processes do not count)."""
    started = time.thread_time()
    check(text)
    return time.thread_time() - started


def _ratio(check: Callable[[str], object], small: str, large: str) -> tuple[float, float]:
    """(large / small, large) in CPU time; a ratio of 0 when ``large`` is under the noise line."""
    big = _cpu_seconds(check, large)
    if big < NOISE_SECONDS:
        return 0.0, big
    return big / max(_cpu_seconds(check, small), 1e-4), big


@pytest.mark.parametrize("rule", list(rules()))
def test_every_rule_is_linear_on_pathological_input(rule: str) -> None:
    check = rules()[rule]
    small = dict(cases(SMALL))
    slow = []
    for name, text in cases(SMALL * GROWTH):
        ratio, large = _ratio(check, small[name], text)
        if ratio > MAX_RATIO:  # once more before calling it quadratic: a GC pause can land in either run
            ratio, large = min(ratio, _ratio(check, small[name], text)[0]), large
        if ratio > MAX_RATIO:
            slow.append(f"{name}: {ratio:.0f}x for {GROWTH}x the input ({large:.2f} s)")
    assert not slow, f"{rule} is not linear: {', '.join(slow)}"


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
