"""A stand-in chat model for the knowledge-base tests and eval: it answers from the numbered excerpts in
the prompt, citing the one that shares most words with the question, the way a grounded model should.

It measures the plumbing (numbering, prompt block, citation mapping), not a real model's judgement: with a
configured LLM the eval asks that instead.
"""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.openai_server import Behaviour, Reply, last_user_text

_HEAD = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)
_WORD = re.compile(r"[a-z0-9]+")
NOT_COVERED_ANSWER = "I'm sorry, I don't know that. Shall I get a person to help?"


def _words(text: str) -> set[str]:
    return {w[:5] for w in _WORD.findall(text.lower()) if len(w) > 2}


def excerpts(body: dict[str, Any]) -> dict[int, str]:
    # The excerpts travel in the user-role reference message (core/prompt.py), fenced.
    system = "\n".join(
        m.get("content", "") for m in body.get("messages", []) if "<reference>" in m.get("content", "")
    )
    heads = list(_HEAD.finditer(system))
    out = {}
    for n, m in enumerate(heads):
        end = heads[n + 1].start() if n + 1 < len(heads) else len(system)
        out[int(m.group(1))] = system[m.start() : end]
    return out


def extractive(body: dict[str, Any]) -> Behaviour:
    question = last_user_text(body)
    found = excerpts(body)
    if not found:
        return Reply(NOT_COVERED_ANSWER)
    asked = _words(question)
    best = max(found, key=lambda n: (len(asked & _words(found[n])), -n))
    lines = [ln for ln in found[best].splitlines()[2:] if ln.strip() and not ln.startswith("```")]
    return Reply(f"{(lines[0] if lines else 'See our help centre.')} [{best}]")
