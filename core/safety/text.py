"""Small pure text helpers: invisible characters, normalisation for matching, links and mentions."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Characters that change nothing visible but can hide or reorder text: zero-width spaces and joiners,
# bidirectional overrides and isolates, word joiners, soft hyphens, BOMs, Unicode tags (used to smuggle
# instructions invisibly), the variation selectors beyond the emoji range, and C0/C1 controls.
_INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200e\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\u3164\ufeff\uffa0"
    "\U000e0100-\U000e01ef"
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
)
_INVISIBLE_RE = re.compile(f"[{_INVISIBLE}]")
_TAGS_RE = re.compile("(\U0001f3f4?)([\U000e0000-\U000e007f]+)")  # tag runs, with a black flag before
_ZWJ_RE = re.compile("\u200d")


def _keep_zwj(text: str, at: int) -> bool:
    """A zero-width joiner is kept between two non-ASCII symbols (emoji sequences such as 👩‍💻)."""
    before = text[at - 1] if at > 0 else ""
    after = text[at + 1] if at + 1 < len(text) else ""
    return bool(before) and bool(after) and ord(before) > 0x2000 and ord(after) > 0x2000


def strip_invisible(text: str) -> str:
    """Remove invisible and reordering characters, keeping emoji sequences (ZWJ, subdivision flags)."""
    if text.isascii() and text.isprintable():
        return text

    def tags(m: re.Match[str]) -> str:
        flag, run = m.group(1), m.group(2)
        if flag and len(run) <= 7 and run.endswith("\U000e007f"):
            return flag + run  # 🏴 + tag letters + cancel tag: a subdivision flag such as Scotland's
        return flag

    text = _TAGS_RE.sub(tags, text)
    text = _INVISIBLE_RE.sub("", text)
    if "\u200d" in text:
        text = "".join(ch for i, ch in enumerate(text) if ch != "\u200d" or _keep_zwj(text, i))
    return text


def has_invisible(text: str) -> bool:
    return strip_invisible(text) != text


def normalize(text: str) -> str:
    """The form pattern rules match on: invisibles removed, NFKC (fullwidth and styled letters folded),
    case-folded, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", strip_invisible(text)).casefold()
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------- links

_COMMON_TLDS = (
    "com|net|org|io|co|ai|app|dev|me|info|biz|xyz|gg|ly|to|tk|ru|cn|uk|de|fr|nl|eu|us|ca|au|in|jp|"
    "br|es|it|pl|se|ch|at|be|online|site|club|top|shop|store|link|click|live|tech|cloud|page|zip|mov"
)
_URL_RE = re.compile(r"(?<![a-z0-9+.-])(?:[a-z][a-z0-9+.-]{1,15}://|www\.)[^\s<>|\"'`]+", re.IGNORECASE)
# Bare domains ("evil.io/x") are found from their top-level domain (a literal after a dot: fast to scan for)
# and extended to the left over the labels before it: to the start of the run of label characters holding
# the TLD, found once per run (walking left from every TLD match was quadratic on ".com.com.com...").
_TLD_RE = re.compile(
    rf"\.(?:{_COMMON_TLDS})(?![a-z0-9-]|\.[a-z0-9])(?::\d{{2,5}})?(?:/[^\s<>|\"'`]*)?", re.IGNORECASE
)
_LABEL_RUN_RE = re.compile(r"[A-Za-z0-9.-]+")
_HOST_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:[^@/\s]*@)?([^/:?#\s]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Link:
    start: int
    end: int
    url: str

    @property
    def host(self) -> str:
        m = _HOST_RE.match(self.url)
        return (m.group(1) if m else "").lower().rstrip(".")


def find_links(text: str) -> Iterator[Link]:
    """URLs with a scheme, ``www.`` addresses and bare domains with a common top-level domain, in order."""
    found: list[tuple[int, int]] = []
    if "://" in text or "www." in text.lower():
        found += [(m.start(), m.end()) for m in _URL_RE.finditer(text)]
    if "." in text:
        runs = _LABEL_RUN_RE.finditer(text)
        run_start, run_end = -1, -1
        for m in _TLD_RE.finditer(text):
            while run_end <= m.start():  # TLD matches come in order: the runs are walked once, in step
                run = next(runs)
                run_start, run_end = run.start(), run.end()
            start = run_start
            if start == m.start() or (start > 0 and text[start - 1] in "@_/:") or text[start] in ".-":
                continue  # no label before the TLD, an e-mail's domain, or part of a longer URL or path
            found.append((start, m.end()))
    last = -1
    for start, end in sorted(found):
        if start < last:
            continue  # a bare domain inside a URL already found
        url = text[start:end].rstrip(".,;:!?)]}>*_~")
        last = start + len(url)
        yield Link(start, last, url)


def host_allowed(host: str, domains: Sequence[str]) -> bool:
    """``host`` is one of ``domains`` or a subdomain of one."""
    return any(host == d or host.endswith("." + d) for d in domains)


# ------------------------------------------------------------------------------------------- mentions

# Labels are bounded (Slack's are at most 80 characters): an unbounded ``[^>]*`` rescanned the rest of the
# text from every "<@U1|" (quadratic). IDs are bounded for the same reason.
_MENTION_RE = re.compile(
    r"<!(everyone|here|channel)(?:\|[^>]{0,255})?>"  # Slack broadcast mentions
    r"|<!subteam\^[A-Z0-9]{1,40}(?:\|([^>]{0,255}))?>"  # Slack user-group mention
    r"|<@[!&]?([A-Z0-9]{1,40})(?:\|([^>]{0,255}))?>"  # Slack and Discord user / role mentions
    r"|(?<![\w@])@(everyone|here|channel)\b",  # Discord broadcast mentions (and Slack's legacy ones)
    re.IGNORECASE,
)


def _may_mention(text: str) -> bool:
    return "@" in text or "<!" in text


def neutralize_mentions(text: str) -> str:
    """Rewrite mentions so that they ping no one: ``@everyone`` -> ``everyone``, ``<@U1|ann>`` -> ``ann``."""

    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(1)
        if m.group(0).startswith("<!subteam"):
            return m.group(2).lstrip("@") if m.group(2) else "the group"
        if m.group(3):
            return m.group(4) or "someone"
        return m.group(5)

    return _MENTION_RE.sub(repl, text) if _may_mention(text) else text


def has_mentions(text: str) -> bool:
    return _may_mention(text) and _MENTION_RE.search(text) is not None


def humanize_seconds(seconds: float) -> str:
    """``7`` -> "7 seconds", ``3_900`` -> "1 hour 5 minutes"."""
    s = max(1, int(seconds + 0.999))
    if s < 60:
        return f"{s} second{'s' * (s != 1)}"
    if s < 3_600:
        m = (s + 59) // 60
        return f"{m} minute{'s' * (m != 1)}"
    h, rest = divmod(s, 3_600)
    m = rest // 60
    hours = f"{h} hour{'s' * (h != 1)}"
    return f"{hours} {m} minute{'s' * (m != 1)}" if m else hours
