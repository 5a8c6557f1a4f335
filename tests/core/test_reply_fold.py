"""The one reply-stream folder: deltas append, a replace swaps what was shown, ReplyDone ends it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from adapters.common.flags import excerpt, flag_report
from core.reply import ReplyFold, fold_reply
from core.types import (
    Author,
    Place,
    ReplyDelta,
    ReplyDone,
    ReplyEvent,
    ReplyKind,
    ReplyReplace,
    ReplyResult,
    Turn,
)

DONE = ReplyResult("t1", ReplyKind.REFUSAL, "Sorry.")


async def _events(*events: ReplyEvent) -> AsyncIterator[ReplyEvent]:
    for event in events:
        yield event


def test_deltas_append_and_a_replace_swaps_what_was_shown() -> None:
    fold = ReplyFold()
    for event in (ReplyDelta("Hel"), ReplyDelta("lo"), ReplyReplace("Sorry"), ReplyDelta(".")):
        assert fold.add(event) is event
    assert (fold.shown, fold.text, fold.result) == ("Sorry.", "Sorry.", None)
    fold.add(ReplyDone(ReplyResult("t1", ReplyKind.ANSWER, "final")))
    assert fold.shown == "Sorry."  # what was on screen before the end
    assert fold.text == "final"  # the result's text wins once the stream is done


async def test_a_watched_stream_passes_events_through_and_can_be_resumed() -> None:
    events = [ReplyDelta("a"), ReplyDelta("b"), ReplyDone(DONE)]
    fold = ReplyFold()
    watched = fold.watch(_events(*events))
    assert await anext(watched) is events[0]  # a consumer stops early ...
    assert [e async for e in watched] == events[1:]  # ... and whoever owns the stream drains the rest
    assert fold.result is DONE and fold.shown == "ab"


async def test_a_stream_without_its_end_is_an_error_carrying_what_was_shown() -> None:
    fold = await fold_reply(_events(ReplyDelta("half")), first=ReplyDelta("a "))
    assert fold.outcome() == ReplyResult("", ReplyKind.ERROR, "a half")
    assert (await fold_reply(_events(ReplyDone(DONE)))).outcome() is DONE


def test_a_flag_report_only_for_flagged_turns_that_were_answered_or_refused() -> None:
    turn = Turn(Author("U1", "Ann"), Place("slack", "T1", "C1"), "mail a@b.example " + "x" * 400)
    flagged = ReplyResult(turn.turn_id, ReplyKind.ANSWER, "ok", flag="violence")
    report = flag_report(turn, flagged, lambda text: text.replace("a@b.example", "[redacted email]"))
    assert report is not None
    assert (report.category, report.user_id, report.user_name, report.command) == (
        "violence",
        "U1",
        "Ann",
        "",
    )
    assert report.excerpt == excerpt(turn.text.replace("a@b.example", "[redacted email]"))
    assert report.excerpt.startswith("mail [redacted email] x") and len(report.excerpt) == 300
    assert flag_report(turn, ReplyResult(turn.turn_id, ReplyKind.ANSWER, "ok"), None) is None
    ignored = ReplyResult(turn.turn_id, ReplyKind.IGNORED, "", flag="violence")
    assert flag_report(turn, ignored, None) is None
