"""The PII redactor on the corpus: every format found and named, look-alikes left alone, pluggable."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from core.errors import ConfigError
from core.safety.redact import KINDS, build_redactor, iban_ok, luhn_ok
from tests.safety.conftest import CORPUS

PII: dict[str, Any] = tomllib.loads((CORPUS / "pii.toml").read_text(encoding="utf-8"))
BENIGN: dict[str, Any] = tomllib.loads((CORPUS / "benign.toml").read_text(encoding="utf-8"))
REDACTOR = build_redactor(KINDS, [], source="test")


@pytest.mark.parametrize("case", PII["case"], ids=lambda c: f"{c['kind']}:{c['text'][:24]}")
def test_each_format_is_found_and_named(case: dict[str, str]) -> None:
    redacted, kinds = REDACTOR.scan(case["text"])
    assert case["secret"] not in redacted
    assert case["kind"] in kinds, (redacted, kinds)
    assert f"[redacted {case['kind'].replace('_', ' ')}]" in redacted


@pytest.mark.parametrize(
    "text", [c["text"] for c in PII["negative"]] + [c["text"] for c in BENIGN["case"]], ids=lambda t: t[:30]
)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert REDACTOR.scan(text) == (text, [])


def test_checksums() -> None:
    assert luhn_ok("4111 1111 1111 1111") and not luhn_ok("4111 1111 1111 1112")
    assert not luhn_ok("0000 0000 0000 0000")  # passes Luhn, but no card is all one digit
    assert iban_ok("DE89 3704 0044 0532 0130 00") and not iban_ok("DE89 3704 0044 0532 0130 01")
    assert not iban_ok("DE89 3704 0044 0532 0130 0")  # Germany's IBANs have 22 characters


def test_a_word_after_an_iban_is_not_swallowed() -> None:
    assert REDACTOR.redact("to DE89370400440532013000 asap") == "to [redacted iban] asap"


def test_invisible_characters_cannot_hide_data_and_are_dropped() -> None:
    assert REDACTOR.redact("mail: a\u200bda@exa\u2060mple.com\u202e") == "mail: [redacted email]"
    assert REDACTOR.redact("team 👩‍💻 ok") == "team 👩‍💻 ok"  # the joiner inside an emoji stays


def test_only_the_configured_kinds_are_redacted() -> None:
    emails_only = build_redactor(["email"], [], source="test")
    assert emails_only.redact("a@b.io, 4111 1111 1111 1111") == "[redacted email], 4111 1111 1111 1111"
    with pytest.raises(ConfigError, match=r"privacy\.redact\[1\]: unknown kind 'ssn'"):
        build_redactor(["email", "ssn"], [], source="bot.toml")


class _EmployeeIds:
    kind = "employee_id"

    def find(self, text: str) -> list[tuple[int, int]]:
        at = text.find("EMP-")
        return [(at, at + 9)] if at >= 0 else []


def employee_ids() -> _EmployeeIds:
    return _EmployeeIds()


def test_extra_detectors_plug_in_and_bad_ones_fail_at_start_up() -> None:
    redactor = build_redactor(["email"], ["tests.safety.test_redact:employee_ids"], source="bot.toml")
    assert redactor.redact("I am EMP-12345, a@b.io") == "I am [redacted employee id], [redacted email]"
    with pytest.raises(ConfigError, match=r"privacy\.extra_detectors\[0\]: cannot load"):
        build_redactor([], ["tests.safety.nope:thing"], source="bot.toml")
    with pytest.raises(ConfigError, match=r"extra_detectors\[0\]: expected 'package.module:factory'"):
        build_redactor([], ["no_colon"], source="bot.toml")
    with pytest.raises(ConfigError, match="did not give a detector"):
        build_redactor([], ["tests.safety.test_redact:KINDS"], source="bot.toml")
