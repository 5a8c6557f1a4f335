"""Personal-data redaction: e-mail, phone numbers, payment cards (Luhn), IBANs (mod 97), government-id-like
numbers, and API keys and tokens (OpenAI ``sk-``, Slack ``xoxb-``/``xapp-``, Discord bot tokens, ...).

The redactor runs before anything is stored in memory (the engine applies it to every stored message), and,
per moderation profile, before the text goes to the LLM. Detectors are pluggable: a :class:`Detector` finds
spans of one kind; ``[privacy] extra_detectors = ["package.module:factory"]`` adds heavier ones (an NER model,
say) at start-up. Overlapping findings are merged; each span becomes ``[redacted <kind>]``.

Detection is pattern-based with checksums where the format has one, tuned to over-redact contact data and
secrets rather than miss them, while leaving dates, times, versions, order numbers and IP addresses alone.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.errors import ConfigError
from core.safety.text import strip_invisible

KINDS = ("email", "phone", "card", "iban", "gov_id", "secret")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    start: int
    end: int


@runtime_checkable
class Detector(Protocol):
    """Finds spans of one kind of personal data in a text."""

    @property
    def kind(self) -> str: ...

    def find(self, text: str) -> Iterable[tuple[int, int]]: ...


_DIGIT_RE = re.compile(r"\d")


@functools.lru_cache(maxsize=16)
def _digit_count(text: str) -> int:
    return len(_DIGIT_RE.findall(text))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@functools.lru_cache(maxsize=16)
def _ascii_lower(text: str) -> str:
    """Lower-case A-Z only: unlike ``str.lower`` it keeps every offset."""
    return text.translate(_ASCII_LOWER)


@dataclass(frozen=True, slots=True)
class RegexDetector:
    """Spans of ``pattern`` (or of its named group ``value``) that pass ``check``.

    Patterns start with a literal or a character class (no leading ``\\b`` or look-behind, which would
    stop the regex engine from skipping ahead); ``word_start`` checks the left boundary in code instead.
    ``needs`` (any one of these substrings) and ``min_digits`` skip texts that cannot match.
    """

    kind: str
    pattern: re.Pattern[str]
    check: Callable[[str], bool] | None = None
    word_start: bool = True
    needs: tuple[str, ...] = ()
    min_digits: int = 0
    lowered: bool = False  # match a lower-case pattern on the text with A-Z lowered (same offsets)

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        if self.needs and not any(n in text for n in self.needs):
            return
        if self.min_digits and _digit_count(text) < self.min_digits:
            return
        has_value = "value" in self.pattern.groupindex
        for m in self.pattern.finditer(_ascii_lower(text) if self.lowered else text):
            start = m.start()
            if self.word_start and start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_+-."):
                continue
            group: int | str = "value" if has_value and m.group("value") else 0
            if self.check is None or self.check(text[m.start(group) : m.end(group)]):
                yield m.start(group), m.end(group)


# ------------------------------------------------------------------------------------------- checksums


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_IBAN_LENGTHS = {"NO": 15, "BE": 16, "DK": 18, "FI": 18, "NL": 18, "DE": 22, "GB": 22, "IE": 22, "CH": 21}


def iban_ok(value: str) -> bool:
    iban = "".join(value.split()).upper()
    if not 15 <= len(iban) <= 34 or not iban.isalnum():
        return False
    expected = _IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _digits(value: str) -> int:
    return sum(c.isdigit() for c in value)


_DATE_RE = re.compile(r"^\d{4}[-/. ]\d{1,2}[-/. ]\d{1,2}$|^\d{1,2}[-/. ]\d{1,2}[-/. ]\d{2,4}$")


def phone_ok(value: str) -> bool:
    return 8 <= _digits(value) <= 15 and not _DATE_RE.match(value.strip())


# -------------------------------------------------------------------------------------------- patterns

_I = re.IGNORECASE

EMAIL = RegexDetector(
    "email",
    re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b"),
    needs=("@",),
)

PHONE = RegexDetector(
    "phone",
    re.compile(
        # international: +44 20 7946 0958, +1-555-010-9999, +4930123456
        r"\+\d{1,3}(?:[\s.-]?\(?\d{1,5}\)?)(?:[\s.-]?\d{2,5}){1,5}(?!\w)"
        # with an area code in brackets: (555) 010-9999, (030) 1234 5678
        r"|\(\d{2,5}\)[\s.-]?\d{2,5}(?:[\s.-]?\d{2,5}){0,3}(?!\w)"
        # North American: 555-010-9999, 555.010.9999, 555 010 9999
        r"|\d{3}([-.\s])\d{3}\1\d{4}(?!\w|[.-]\d)"
        # national numbers with a trunk 0: 020 7946 0958, 030-1234567, 06 12 34 56 78, 0151 12345678
        r"|0\d{1,4}(?:[\s/-]\d{2,8}){1,4}(?!\w|[.-]\d)",
    ),
    phone_ok,
    min_digits=8,
)
LABELLED_PHONE = RegexDetector(
    "phone",
    re.compile(
        r"(?:phone|tel|telephone|mobile|cell|handy|whatsapp|call me (?:at|on))(?: number| no\.?)?"
        r"\W{0,3}(?P<value>\+?[\d(][\d\s().-]{6,20}\d)",
    ),
    phone_ok,
    min_digits=8,
    lowered=True,
)


def _iin_lengths(digits: str) -> tuple[int, ...]:
    """The lengths a card number starting with ``digits`` may have (issuer prefixes; () for none)."""
    two, three, four = int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":
        return (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return (16,)  # Mastercard
    if two in (34, 37):
        return (15,)  # American Express
    if 300 <= three <= 305 or two in (36, 38, 39):
        return (14, 16, 17, 18, 19)  # Diners Club
    if 3528 <= four <= 3589 or four == 6011 or 644 <= three <= 649 or two in (62, 65):
        return (16, 17, 18, 19)  # JCB, Discover, UnionPay
    if two == 50 or 56 <= two <= 69:
        return (13, 14, 15, 16, 17, 18, 19)  # Maestro and the rest of 5x / 6x
    return ()


# How cards are printed: one run of digits, or these groupings with one kind of separator.
_CARD_GROUPS = frozenset({(4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3), (4, 4, 5), (4, 4, 4, 1)})
# A run of digits right after one of these words is an identifier (a Discord or Slack id, an order, a
# message), not a card: ids are long digit runs, and about one in ten passes Luhn by chance.
_ID_CONTEXT = re.compile(
    r"(?:\b(?:ids?|snowflakes?|message|channel|guild|server|user|role|thread|order|ticket|invoice|tracking)"
    r"\b[\s:#=.]{0,3}|[<#@&!/=]|channels/)$",
    re.IGNORECASE,
)


def card_ok(value: str) -> bool:
    """A payment card as people write one: a known issuer prefix and length, Luhn, and either one run of
    13-16 or 19 digits or a usual grouping (4-4-4-4, 4-6-5 ...) with one kind of separator."""
    digits = "".join(c for c in value if c.isdigit())
    if not luhn_ok(digits) or len(digits) not in _iin_lengths(digits):
        return False
    seps = {c for c in value if not c.isdigit()}
    if not seps:  # 17 and 18 digits in one run are ids far more often than cards (Discord's snowflakes)
        return len(digits) not in (17, 18)
    if len(seps) != 1:
        return False
    groups = tuple(len(g) for g in value.split(seps.pop()))
    return groups in _CARD_GROUPS


class CardDetector:
    """Payment cards: 13-19 digits passing :func:`card_ok`. An ungrouped run is left alone when it is part
    of a bigger token (a URL, a mention ``<@...>``, ``#...``) or follows an identifier's label (``id``,
    ``message``, ``order`` ...): platform ids are such runs. A grouped number is a card whatever precedes
    it."""

    kind = "card"
    _candidate = re.compile(r"\d(?:[ -]?\d){12,18}(?![\d-])")

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        if _digit_count(text) < 13:
            return
        for m in self._candidate.finditer(text):
            start, value = m.start(), m.group(0)
            if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_+-.:"):
                continue
            if not card_ok(value):
                continue
            if value.isdigit() and _ID_CONTEXT.search(text, max(0, start - 24), start):
                continue
            yield start, m.end()


CARD = CardDetector()


class IbanDetector:
    """IBANs, written in one piece or in groups of four; the longest prefix that passes mod 97 wins, so a
    word after the number is not swallowed. The remainders of every prefix come from one pass over the
    candidate (checking each prefix afresh cost a big-integer conversion per prefix)."""

    kind = "iban"
    _candidate = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}", _I)

    @staticmethod
    def _longest_valid(value: str) -> int:
        """The end of the longest prefix of ``value`` that is a valid IBAN ending on a word boundary, or 0."""
        compact = value.replace(" ", "").upper()
        head = "".join(str(int(c, 36)) for c in compact[:4])
        head_scale, head_value = 10 ** len(head), int(head)
        expected = _IBAN_LENGTHS.get(compact[:2])
        ok_at: set[int] = set()  # compact lengths whose prefix passes mod 97
        rem = 0
        for n, c in enumerate(compact[4:], start=5):
            d = int(c, 36)
            rem = (rem * (100 if d > 9 else 10) + d) % 97
            length_ok = 15 <= n <= 34 and (expected is None or n == expected)
            if length_ok and (rem * head_scale + head_value) % 97 == 1:
                ok_at.add(n)
        if not ok_at:
            return 0
        n = 0
        lengths = []  # compact length at each end in value
        for ch in value:
            n += ch != " "
            lengths.append(n)
        for end in range(len(value), 14, -1):
            at_boundary = end == len(value) or not value[end].isalnum()
            if at_boundary and value[end - 1] != " " and lengths[end - 1] in ok_at:
                return end
        return 0

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        if _digit_count(text) < 10:
            return
        pos = 0
        while (m := self._candidate.search(text, pos)) is not None:
            pos = m.start() + 1
            if end := self._longest_valid(m.group(0)):
                yield m.start(), m.start() + end
                pos = m.start() + end


IBAN = IbanDetector()

_NINO_FIRST = set("ABCEGHJKLMNOPRSTWXYZ")
_NINO_SECOND = set("ABCEGHJKLMNPRSTWXYZ")


def _ssn_ok(value: str) -> bool:
    area, group, serial = value.split("-")
    return area not in {"000", "666"} and not area.startswith("9") and group != "00" and serial != "0000"


def _nino_ok(value: str) -> bool:
    v = value.replace(" ", "").upper()
    return (
        v[0] in _NINO_FIRST
        and v[1] in _NINO_SECOND
        and v[:2] not in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}
    )


SSN = RegexDetector("gov_id", re.compile(r"\d{3}-\d{2}-\d{4}(?![\w-])"), _ssn_ok, min_digits=9)
NINO = RegexDetector(
    "gov_id", re.compile(r"[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b", _I), _nino_ok, min_digits=6
)
AADHAAR = RegexDetector("gov_id", re.compile(r"[2-9]\d{3} \d{4} \d{4}(?![\d-]| \d)"), min_digits=12)
LABELLED_ID = RegexDetector(
    "gov_id",
    re.compile(
        # anything labelled as an identity document or tax number
        r"(?:ssn|social security(?: number| no\.?)?|passport(?: number| no\.?)?"
        r"|national (?:id|insurance)(?: number| no\.?)?|tax (?:id|number|code)|tin|nino"
        r"|personal id(?: number)?|id (?:card )?(?:number|no\.?)|driver'?s licen[cs]e(?: number| no\.?)?"
        r"|dni|nie|nif|bsn|steuer-?id|personalausweis(?:nummer)?|aadhaar|pesel|cpf|codice fiscale"
        r"|personnummer|sozialversicherungsnummer|numéro de sécurité sociale)"
        r"\s*(?:is|:|#|=|-)?\s*(?P<value>[a-z0-9](?:[a-z0-9./-]| (?=\d)){3,22}[a-z0-9])\b",
    ),
    lambda v: _digit_count(v) >= 4,
    min_digits=4,
    lowered=True,
)

_SECRET_PREFIXES = (
    "sk-", "xox", "xapp-", "hooks.slack.com", "discord", "gh", "github_pat_", "AKIA", "ASIA", "AIza",
    "k_live_", "k_test_", "eyJ", "PRIVATE KEY",
)  # fmt: skip
SECRET = RegexDetector(
    "secret",
    re.compile(
        r"sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI (and look-alikes)
        r"|xox[abposre]-[A-Za-z0-9-]{10,}"  # Slack bot, user and legacy tokens
        r"|xapp-\d-[A-Za-z0-9-]{10,}"  # Slack app-level tokens
        r"|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"  # Slack incoming webhooks
        r"|https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d+/[A-Za-z0-9_-]+"  # webhooks
        r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,}"  # GitHub
        r"|(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
        r"|AIza[0-9A-Za-z_-]{35}\b"  # Google API keys
        r"|[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
        # JSON web tokens, from the start of a run only ("eyJeyJ..." rescanned from each "eyJ": quadratic)
        r"|(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
        r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
    ),
    word_start=False,
    needs=_SECRET_PREFIXES,
)
DISCORD_TOKEN = RegexDetector(
    "secret",
    re.compile(r"[MNO][A-Za-z\d_-]{23,27}\.[A-Za-z\d_-]{6,7}\.[A-Za-z\d_-]{27,40}(?![\w-])"),
    needs=(".",),
)
LABELLED_SECRET = RegexDetector(
    "secret",
    re.compile(
        r"(?:password|passwd|pwd|passcode|api[ _-]?key|secret|access[ _-]?token|auth[ _-]?token)"
        r"\s*(?:is|:|=)\s*[\"']?(?P<value>[^\s\"']{4,})",
    ),
    lowered=True,
)

BUILTIN_DETECTORS: dict[str, tuple[Detector, ...]] = {
    "secret": (SECRET, DISCORD_TOKEN, LABELLED_SECRET),
    "card": (CARD,),
    "iban": (IBAN,),
    "email": (EMAIL,),
    "gov_id": (SSN, NINO, AADHAAR, LABELLED_ID),
    "phone": (PHONE, LABELLED_PHONE),
}  # order matters only for ties: of two equal spans, the earlier detector's kind is kept


def placeholder(kind: str) -> str:
    return f"[redacted {kind.replace('_', ' ')}]"


class PIIRedactor:
    """Replaces what its detectors find with ``[redacted <kind>]``."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors = tuple(detectors)

    def findings(self, text: str) -> list[Finding]:
        """Non-overlapping findings in order; where two overlap, the longer (then the earlier) wins."""
        found: list[Finding] = []
        for detector in self.detectors:
            found += [Finding(detector.kind, s, e) for s, e in detector.find(text) if e > s]
        found.sort(key=lambda f: (f.start, -(f.end - f.start)))
        merged: list[Finding] = []
        for f in found:
            if merged and f.start < merged[-1].end:
                last = merged[-1]
                if f.end > last.end:
                    merged[-1] = Finding(last.kind, last.start, f.end)
                continue
            merged.append(f)
        return merged

    def scan(self, text: str) -> tuple[str, list[str]]:
        """The redacted text and the kinds found (in order of appearance)."""
        if not text:
            return text, []
        clean = strip_invisible(text)  # "j\u200bane@example.com" must not slip through
        findings = self.findings(clean)
        if not findings:
            return (text if clean == text else clean), []
        parts: list[str] = []
        pos = 0
        for f in findings:
            parts.append(clean[pos : f.start])
            parts.append(placeholder(f.kind))
            pos = f.end
        parts.append(clean[pos:])
        return "".join(parts), [f.kind for f in findings]

    def redact(self, text: str) -> str:
        return self.scan(text)[0]


def load_detector(spec: str, *, field: str) -> list[Detector]:
    """``"package.module:factory"`` -> the detector(s) ``factory()`` returns (or the object itself)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{field}: expected 'package.module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
        target = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{field}: cannot load {spec!r}: {exc}") from None
    made = target() if callable(target) and not isinstance(target, Detector) else target
    items = list(made) if isinstance(made, list | tuple) else [made]
    for item in items:
        if not isinstance(item, Detector):
            raise ConfigError(f"{field}: {spec!r} did not give a detector (needs .kind and .find(text))")
    return items


def build_redactor(kinds: Sequence[str], extra: Sequence[str], *, source: str) -> PIIRedactor:
    detectors: list[Detector] = []
    for i, kind in enumerate(kinds):
        if kind not in BUILTIN_DETECTORS:
            raise ConfigError(
                f"{source}: privacy.redact[{i}]: unknown kind {kind!r} (known: {', '.join(KINDS)})"
            )
    detectors += [d for k, group in BUILTIN_DETECTORS.items() if k in kinds for d in group]
    for i, spec in enumerate(extra):
        detectors += load_detector(spec, field=f"{source}: privacy.extra_detectors[{i}]")
    return PIIRedactor(detectors)
