"""What the bot could not answer: not-covered questions, 👎 answers and handoffs, grouped by similarity.

The turns come from the ``console:unanswered`` index (:func:`core.console.stats.queue_unanswered`); each
question's words are read from its transcript (so retention and ``/forget`` apply). Grouping is greedy:
a question joins the first group whose first question is similar enough, by cosine of the knowledge
base's embeddings when the bot has an embedder, else by the Jaccard overlap of their words (lexical).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from core.console.search import terms
from core.console.stats import decode_unanswered, unanswered_key
from core.errors import ParleyError
from core.keys import KeySpace
from core.memory import decode
from core.types import Place

READ_MAX = 500  # newest entries read
PLACES_MAX = 200  # transcripts read for them
LEXICAL_MIN = 0.34  # Jaccard overlap of words to join a group
COSINE_MIN = 0.80  # cosine similarity of embeddings to join a group
KINDS = {"not_covered": "not covered", "down": "thumbs down", "handoff": "handed off"}

Embed = Callable[[Sequence[str]], Awaitable[list[list[float]]]]


@dataclass(frozen=True, slots=True)
class Question:
    kind: str
    turn_id: str
    place: Place
    ts: float
    text: str
    answer: str


@dataclass
class Group:
    questions: list[Question] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.questions[0].text

    @property
    def kinds(self) -> Counter[str]:
        return Counter(KINDS.get(q.kind, q.kind) for q in self.questions)


async def read_questions(client: aioredis.Redis, keys: KeySpace, limit: int = READ_MAX) -> list[Question]:
    raw: Any = await client.zrevrange(unanswered_key(keys), 0, limit - 1, withscores=True)
    entries = [(*decode_unanswered(member), float(score)) for member, score in raw]
    places = list(dict.fromkeys(place for _, _, place, _ in entries))[:PLACES_MAX]
    if not places:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for place in places:
            pipe.lrange(keys.messages(place), 0, -1)
        tails: list[Any] = await pipe.execute()
    said: dict[tuple[Place, str], tuple[str, str]] = {}
    for place, tail in zip(places, tails, strict=True):
        for message in map(decode, tail):
            question, answer = said.get((place, message.turn_id), ("", ""))
            if message.role == "user":
                question = message.text
            elif message.role == "assistant":
                answer = message.text
            said[(place, message.turn_id)] = (question, answer)
    out = []
    seen: set[tuple[str, str]] = set()
    for kind, turn_id, place, ts in entries:
        question, answer = said.get((place, turn_id), ("", ""))
        if question.strip() and (kind, turn_id) not in seen:
            seen.add((kind, turn_id))
            out.append(Question(kind, turn_id, place, ts, question, answer))
    return out


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def group_lexical(questions: Sequence[Question]) -> list[Group]:
    groups: list[tuple[set[str], Group]] = []
    for q in questions:
        words = set(terms([q.text]))
        for first, group in groups:
            if _jaccard(words, first) >= LEXICAL_MIN:
                group.questions.append(q)
                break
        else:
            groups.append((words, Group([q])))
    return sorted((g for _, g in groups), key=lambda g: -len(g.questions))


def group_vectors(questions: Sequence[Question], vectors: Sequence[Sequence[float]]) -> list[Group]:
    groups: list[tuple[Sequence[float], Group]] = []
    for q, vector in zip(questions, vectors, strict=True):
        for first, group in groups:
            if _cosine(vector, first) >= COSINE_MIN:
                group.questions.append(q)
                break
        else:
            groups.append((vector, Group([q])))
    return sorted((g for _, g in groups), key=lambda g: -len(g.questions))


async def grouped(questions: Sequence[Question], embed: Embed | None) -> tuple[list[Group], str]:
    """The groups and how they were made ("embeddings" or "lexical")."""
    if embed is not None and questions:
        try:
            vectors = await embed([q.text for q in questions])
        except ParleyError:  # an embeddings outage falls back to words (the page says which)
            vectors = []
        if len(vectors) == len(questions):
            return group_vectors(questions, vectors), "embeddings"
    return group_lexical(questions), "lexical"
