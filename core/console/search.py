"""Search over transcripts: an inverted index in Redis, written as turns are written.

Per term, a sorted set ``{<prefix>:<bot>:console:ix}:<term>`` of conversations (members encoded as in
:mod:`core.console.stats`) scored by the last time the term was written there; each expires with memory's
TTL, so the index keeps what the transcripts keep. Terms are lower-cased words and numbers (``A1001`` is
``a1001``), including the writer's display name. A turn adds one ``EVAL`` to its final memory write's
pipeline (a ZADD and an EXPIRE per distinct term, run on the server): no extra round trip, no scan.

A query is an AND of its terms: one round trip intersects the sets on the server (they share a hash tag,
so this works in Redis Cluster too) and returns the newest ``limit`` conversations and the total; a second
reads those conversations' tails to show the matching lines, highlighted.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from core.console.places import decode_place, encode_place
from core.keys import KeySpace
from core.memory import StoredMessage, decode
from core.types import Place

WORD = re.compile(r"[^\W_]+", re.UNICODE)
MAX_TERMS = 64  # distinct terms indexed per write (a long message adds no more)
MAX_QUERY_TERMS = 8
SCAN_TAIL = 200  # messages of each result read for matching lines
# The index write of one message: KEYS the terms' sets, ARGV member, score, TTL. One command instead of two
# per term: redis-py packs every command in Python, and a 70-word reply's ~80 index commands were about a
# tenth of the reply's CPU. The keys share a hash tag, so one script may touch them all on a cluster too.
# Sent as EVAL (the server keeps the compiled script by its hash): nothing to reload after a restart.
_INDEX = """
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[2], ARGV[1])
  redis.call('EXPIRE', key, ARGV[3])
end
return #KEYS
"""
STOP = frozenset(
    (
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "do",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "they",
        "this",
        "to",
        "too",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    )
)


def terms(texts: Iterable[str], limit: int = MAX_TERMS) -> list[str]:
    """Distinct index terms, in order of first appearance."""
    out: dict[str, None] = {}
    for text in texts:
        for word in WORD.findall(text.lower()):
            if (len(word) > 1 or word.isdigit()) and word not in STOP and len(word) <= 40:
                out[word] = None
                if len(out) >= limit:
                    return list(out)
    return list(out)


def highlight(text: str, wanted: Sequence[str]) -> list[tuple[str, bool]]:
    """``text`` cut into (piece, is_a_match) parts; a match is a whole word equal to a wanted term."""
    if not wanted:
        return [(text, False)]
    parts: list[tuple[str, bool]] = []
    last = 0
    for match in WORD.finditer(text):
        if match.group(0).lower() in wanted:
            if match.start() > last:
                parts.append((text[last : match.start()], False))
            parts.append((match.group(0), True))
            last = match.end()
    if last < len(text):
        parts.append((text[last:], False))
    return parts


@dataclass(frozen=True, slots=True)
class Hit:
    place: Place
    last: float
    lines: Sequence[tuple[StoredMessage, list[tuple[str, bool]]]]  # matching messages, highlighted


@dataclass(frozen=True, slots=True)
class Found:
    query: str
    terms: Sequence[str]
    total: int
    hits: Sequence[Hit]


class SearchIndex:
    def __init__(self, client: aioredis.Redis, keys: KeySpace, *, ttl_seconds: int) -> None:
        self._r = client
        self._keys = keys
        self.ttl = ttl_seconds
        self._tag = f"{{{keys.prefix}:{keys.bot}:console:ix}}"

    def key(self, term: str) -> str:
        return f"{self._tag}:{term}"

    def queue(self, pipe: Any, place: Place, texts: Iterable[str], *, now: float | None = None) -> None:
        """Queue the index writes of ``texts`` written in ``place`` on the caller's pipeline."""
        keys = [self.key(term) for term in terms(texts)]
        if keys:
            now = time.time() if now is None else now
            pipe.eval(_INDEX, len(keys), *keys, encode_place(place), repr(float(now)), self.ttl)

    async def search(
        self, query: str, *, limit: int = 20, now: float | None = None, messages_key: Any = None
    ) -> Found:
        """The newest ``limit`` conversations holding every term of ``query`` (within retention)."""
        wanted = terms([query], MAX_QUERY_TERMS)
        if not wanted:
            return Found(query, [], 0, [])
        now = time.time() if now is None else now
        tmp = f"{self._tag}:q:{uuid.uuid4().hex}"
        oldest = now - self.ttl
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zinterstore(tmp, [self.key(t) for t in wanted], aggregate="MIN")
            pipe.zremrangebyscore(tmp, "-inf", f"({oldest}")
            pipe.zcard(tmp)
            pipe.zrevrange(tmp, 0, limit - 1, withscores=True)
            pipe.delete(tmp)
            _, _, total, top, _ = await pipe.execute()
        found = [(decode_place(member), float(score)) for member, score in top]
        if not found:
            return Found(query, wanted, int(total), [])
        key_of = messages_key or self._keys.messages
        async with self._r.pipeline(transaction=False) as pipe:
            for place, _ in found:
                pipe.lrange(key_of(place), -SCAN_TAIL, -1)
            tails: list[Any] = await pipe.execute()
        hits = []
        want = set(wanted)
        for (place, last), raw in zip(found, tails, strict=True):
            if not raw:  # forgotten or expired since: its index entries lapse with their TTL
                continue
            lines = []
            for message in map(decode, raw):
                said = set(terms([message.text, message.author_name]))
                if said & want:
                    lines.append((message, highlight(message.text, wanted)))
            hits.append(Hit(place, last, lines[-5:]))
        return Found(query, wanted, int(total), hits)
