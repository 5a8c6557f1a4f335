"""Issue 20, finding 11: card detection does not fire on platform ids (about one Discord snowflake in ten
passes Luhn), while real card numbers in user text are still redacted."""

from __future__ import annotations

import random

import pytest

from core.media.vision import memory_note
from core.safety.redact import KINDS, build_redactor
from core.types import ImageRef

REDACTOR = build_redactor(KINDS, [], source="test")


def snowflakes(n: int, seed: int = 20) -> list[str]:
    """Random snowflakes from Discord's launch (May 2015) to 2035: ms since its epoch << 22 | worker,
    process, increment."""
    rng = random.Random(seed)
    launch, end = 120 * 86_400_000, 20 * 365 * 86_400_000
    return [str((rng.randrange(launch, end) << 22) | rng.randrange(1 << 22)) for _ in range(n)]


@pytest.mark.slow
def test_ten_thousand_snowflakes_are_never_taken_for_cards() -> None:
    ids = snowflakes(10_000)
    assert [i for i in ids if REDACTOR.findings(i)] == []  # bare, as a user pastes one
    for sid in ids:
        for text in (
            f"see {sid} please",
            f"<@{sid}> and <#{sid}> and <@&{sid}>",
            f"https://discord.com/channels/{sid}/{sid}/{sid}",
            memory_note([ImageRef("https://cdn.example/x.png", "image/png", 10, "screenshot.png", "", sid)]),
            f"message id {sid}",
        ):
            assert "[redacted card]" not in REDACTOR.redact(text), text


@pytest.mark.parametrize(
    "text",
    [
        "my card is 4111111111111111, expires 12/29",
        "Card 4111 1111 1111 1111 exp 12/29",
        "use 4111-1111-1111-1111",
        "mastercard 5555555555554444",
        "mc 2223 0031 2200 3222",
        "amex 3782 822463 10005",
        "discover 6011111111111117",
        "jcb 3530111333300000",
        "card number 4012888888881881",
    ],
)
def test_real_card_numbers_in_user_text_are_still_redacted(text: str) -> None:
    assert "[redacted card]" in REDACTOR.redact(text), text


def test_grouping_and_separators_decide() -> None:
    from core.safety.redact import card_ok  # new in issue 20

    assert card_ok("4111 1111 1111 1111") and card_ok("4111-1111-1111-1111")
    assert not card_ok("41 1111 1111 1111 11")  # not how a card is printed
    assert not card_ok("4111 1111-1111 1111")  # two kinds of separator
    assert not card_ok("1579498630862209025")  # Luhn may pass; no issuer starts with 1
