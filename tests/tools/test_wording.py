"""Confirmations in words: the template is filled with the arguments verbatim, escaped, never rewritten."""

from __future__ import annotations

from core.tools.loop import confirm_text
from core.tools.wording import confirm_summary, render_template


def test_template_shows_each_argument_verbatim_in_code() -> None:
    text = confirm_summary("create_ticket", {"subject": "Printer on fire"}, "Create a ticket: {subject}")
    assert text == "Create a ticket: `Printer on fire`"


def test_markup_links_and_mentions_in_arguments_stay_inert_and_unchanged() -> None:
    evil = "**urgent** <!channel> [pay](https://evil.example.net/collect?acct=666) `x`"
    text = render_template("Create: {subject}", {"subject": evil})
    assert text is not None
    assert evil in text  # not shortened, not rewritten
    fence = text.removeprefix("Create: ").split(" ")[0]
    assert fence == "``" and text.endswith(" ``")  # a fence longer than any backtick run in the value


def test_what_cannot_be_shown_inline_points_to_the_details() -> None:
    args = {"subject": "two\nlines", "n": 3, "tags": ["a"]}
    assert render_template("{subject} / {n} / {tags}", args) == "(see details) / `3` / (see details)"


def test_a_template_that_does_not_fit_falls_back_to_the_plain_sentence() -> None:
    for template in ("{missing}", "{subject.__class__}", "{subject[0]}", "{subject!r}", "{subject:>9}", "{"):
        assert confirm_summary("t", {"subject": "s"}, template) == "I'd like to run **t**."


def test_the_exact_arguments_are_always_beside_the_summary() -> None:
    text = confirm_text("create_ticket", {"subject": "Hi"}, "Create a ticket: {subject}")
    assert text.startswith("Create a ticket: `Hi`\n")
    assert '"subject": "Hi"' in text and "Shall I go ahead?" in text
