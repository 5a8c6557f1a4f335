"""Local moderation rules: deterministic checks that need no network.

Each rule reports :class:`Hit` values (a category, the spans it covers when it knows them, and a short detail
code that never contains the user's words). What happens to a hit is the profile's business (chain.py).

Prompt-injection patterns are a tripwire, not a wall: they catch the common phrasings (ignore previous
instructions, reveal your system prompt, DAN and "developer mode" role-play, fake role markers) after
normalisation (zero-width characters removed, fullwidth and styled letters folded, case and spacing folded).
The real defences are structural: user text only ever travels in user messages, the system prompt tells the
model that user text is untrusted, no tools are exposed, and replies are checked by code (the canary, the
system prompt's own sentences, links and mentions).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.safety.redact import PIIRedactor, placeholder
from core.safety.text import find_links, has_mentions, host_allowed, normalize

INJECTION_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "ignore_instructions",
        r"\b(?:ignore|disregard|forget|override|bypass|skip|drop)\s+(?:all\s+|any\s+|every\s+)?(?:of\s+)?"
        r"(?:the\s+|your\s+|my\s+|these\s+|those\s+|this\s+)?(?:previous\s+|prior\s+|above\s+|earlier\s+|"
        r"preceding\s+|original\s+|initial\s+|system\s+|existing\s+|current\s+|safety\s+)*"
        r"(?:instructions?|rules|prompts?|directions|directives|guidelines|guardrails|restrictions|"
        r"programming|constraints|policies|system prompt)\b",
    ),
    (
        "forget_everything",
        r"\bforget\s+(?:everything|all)\s+(?:you(?:'ve| have| were)?\s+(?:been\s+)?told|above|before)",
    ),
    (
        "prompt_request",
        r"\b(?:system|initial|original|hidden|secret|developer|pre-?)\s*(?:prompt|message|instructions)\b"
        r"|\b(?:confidential|canary)\s+marker\b"
        r"|\byour\s+(?:prompt|instructions)\b.{0,30}\b(?:verbatim|word for word|exactly|in full)\b"
        r"|\b(?:verbatim|word for word)\b.{0,40}\byour\s+(?:prompt|instructions)\b"
        r"|\b(?:repeat|print|reveal|show|output|recite|dump|echo)\b.{0,30}\b(?:everything|all|text|words|lines)"
        r"\b.{0,20}\b(?:above|before this|so far)\b",
    ),
    (
        "roleplay_jailbreak",
        r"\b(?:you are|you're|act as|acting as|pretend|roleplay|role-play|role play|imagine you are|"
        r"from now on|simulate|become)\b.{0,80}\b(?:no|without|free of|free from|unbound by|ignor\w*)\s+"
        r"(?:any\s+|all\s+)?(?:rules|restrictions|limits|limitations|filters|guidelines|censorship|morals|ethics|"
        r"policies|boundaries)\b",
    ),
    (
        "jailbreak_persona",
        r"\bdo anything now\b|\bjailbr[eo]a?k\w*|\b(?:dan|stan|dude|aim)\s+(?:mode|prompt)\b"
        r"|\b(?:developer|debug|god|sudo|unrestricted|unfiltered|uncensored|evil)\s+mode\b",
    ),
    (
        "role_markers",
        r"<\|?(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\|?>|\[/?inst\]|<</?sys>>"
        r"|</?(?:system|assistant|instructions?)>|\bnew\s+(?:instructions|rules|persona)\s*:"
        r"|\b(?:begin|end)\s+(?:of\s+)?(?:system|developer)\s+(?:prompt|message|instructions)",
    ),
)
# Words one of which each pattern needs: a substring test skips the regex for nearly every message.
_INJECTION_NEEDS = {
    "ignore_instructions": ("ignor", "disregard", "forget", "overrid", "bypass", "skip", "drop"),
    "forget_everything": ("forget",),
    "prompt_request": ("prompt", "message", "instruction", "marker", "above", "before this", "so far"),
    "roleplay_jailbreak": (
        "you are",
        "you're",
        "act",
        "pretend",
        "role",
        "imagine",
        "from now",
        "simulat",
        "become",
    ),
    "jailbreak_persona": ("anything now", "jailbr", "mode"),
    "role_markers": ("<", "[", "new ", "begin", "end"),
}
_INJECTION = tuple((name, _INJECTION_NEEDS[name], re.compile(p)) for name, p in INJECTION_PATTERNS)

# Streamed replies are re-checked incrementally: each check looks only at the text added since the last one
# plus STREAM_OVERLAP characters before it, so that a match straddling the previous check's end is still
# seen whole. It covers every bounded rule: mentions (<= ~300 chars), injection phrasings (<= ~200), e-mail,
# phone, card, IBAN and labelled-id shapes (<= ~100), and LEAK_SHINGLES shingles of the prompt (~10 words).
# Unbounded shapes (a URL, a PEM private key, a prompt echo scattered over the whole reply) longer than the
# overlap are caught by the final check, which always sees the whole reply: streamed checks only stop early.
STREAM_OVERLAP = 512


def stream_window_start(text: str, since: int) -> int:
    """Where an incremental check of ``text`` starts, given that ``text[:since]`` was already checked:
    STREAM_OVERLAP characters before ``since``, moved forward to the next whitespace (at most to ``since``) so
    that no word or URL is seen cut in half ("docs.example.com" as "ample.com" would read as another host)."""
    if since <= STREAM_OVERLAP:
        return 0
    cut = since - STREAM_OVERLAP
    m = _SPACE.search(text, cut, since)
    return m.end() if m else since


SHINGLE_WORDS = 8  # a reply that repeats >= LEAK_SHINGLES runs of this many words of a system prompt leaks it
LEAK_SHINGLES = 3
_WORD = re.compile(r"[\w']+")
_SPACE = re.compile(r"\s")
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


@dataclass(frozen=True, slots=True)
class Hit:
    category: str
    spans: tuple[tuple[int, int, str], ...] = ()  # (start, end, replacement); empty: the whole text
    detail: str = ""  # a short code for the record; never the matched text


def injection_hits(normalized: str) -> list[Hit]:
    """One hit naming every rule that fired (``detail="ignore_instructions,prompt_request"``)."""
    names = [
        name
        for name, needs, rx in _INJECTION
        if any(n in normalized for n in needs) and rx.search(normalized)
    ]
    return [Hit("prompt_injection", detail=",".join(names))] if names else []


def _shingles(words: Sequence[str]) -> set[int]:
    return {hash(tuple(words[i : i + SHINGLE_WORDS])) for i in range(len(words) - SHINGLE_WORDS + 1)}


class LocalRules:
    """The checks that run in-process on every input and output."""

    def __init__(
        self,
        *,
        blocked: Sequence[re.Pattern[str]],
        redactor: PIIRedactor,
        link_domains: Sequence[str],
        system_prompts: Iterable[str] = (),
        canary: str = "",
        blocked_category: str = "blocked",
    ) -> None:
        self._blocked = tuple(blocked)
        self._blocked_category = blocked_category
        self.redactor = redactor
        self._domains = tuple(link_domains)
        self._canary = re.sub(r"[\W_]+", "", canary.casefold())
        self._prompt_shingles: set[int] = set()
        for prompt in system_prompts:
            for fragment in _PLACEHOLDER.split(prompt):
                self._prompt_shingles |= _shingles(_WORD.findall(normalize(fragment)))

    def blocked(self, text: str) -> list[Hit]:
        hits = []
        for i, rx in enumerate(self._blocked):
            spans = tuple((m.start(), m.end(), "[removed]") for m in rx.finditer(text) if m.end() > m.start())
            if spans:
                hits.append(Hit(self._blocked_category, spans, f"pattern_{i}"))
        return hits

    def personal_data(self, text: str) -> list[Hit]:
        pii: list[tuple[int, int, str]] = []
        secret: list[tuple[int, int, str]] = []
        kinds: list[str] = []
        for f in self.redactor.findings(text):
            (secret if f.kind == "secret" else pii).append((f.start, f.end, placeholder(f.kind)))
            kinds.append(f.kind)
        hits = []
        if pii:
            hits.append(Hit("pii", tuple(pii), ",".join(sorted({k for k in kinds if k != "secret"}))))
        if secret:
            hits.append(Hit("secret", tuple(secret), "secret"))
        return hits

    def links(self, text: str) -> list[Hit]:
        spans = tuple(
            (link.start, link.end, "[link removed]")
            for link in find_links(text)
            if not host_allowed(link.host, self._domains)
        )
        return [Hit("links", spans, f"{len(spans)}_links")] if spans else []

    def leak(self, text: str) -> str:
        """Why ``text`` leaks the system prompt ("canary" / "prompt_echo"), or "" when it does not."""
        folded = normalize(text)
        if self._canary and self._canary in re.sub(r"[\W_]+", "", folded):
            return "canary"
        if self._prompt_shingles:
            words = _WORD.findall(folded)
            found = 0
            for i in range(len(words) - SHINGLE_WORDS + 1):
                if hash(tuple(words[i : i + SHINGLE_WORDS])) in self._prompt_shingles:
                    found += 1
                    if found >= LEAK_SHINGLES:
                        return "prompt_echo"
        return ""

    def check_input(self, text: str) -> list[Hit]:
        return [
            *self.blocked(text),
            *injection_hits(normalize(text)),
            *self.personal_data(text),
            *self.links(text),
            *([Hit("mentions", detail="mentions")] if has_mentions(text) else []),
        ]

    def check_output(self, text: str) -> list[Hit]:
        hits = []
        if why := self.leak(text):
            hits.append(Hit("prompt_leak", detail=why))
        hits += self.blocked(text)
        hits += self.personal_data(text)
        hits += self.links(text)
        if has_mentions(text):
            hits.append(Hit("mentions", detail="mentions"))
        return hits


def apply_spans(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    """Replace non-overlapping spans (the first of two overlapping ones wins)."""
    out: list[str] = []
    pos = 0
    for start, end, replacement in sorted(spans, key=lambda s: (s[0], -s[1])):
        if start < pos:
            continue
        out.append(text[pos:start])
        out.append(replacement)
        pos = end
    out.append(text[pos:])
    return "".join(out)
