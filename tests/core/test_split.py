"""The shared splitter: limits respected, fences balanced, nothing lost."""

from __future__ import annotations

import re

import pytest

from adapters.common.split import open_fence, split_text


def fences_balanced(chunk: str) -> bool:
    return open_fence(chunk) is None


def long_reply() -> str:
    parts = []
    for i in range(12):
        parts.append(f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 20)
        parts.append("```python\n" + "\n".join(f"print({i}, {j})  # line" for j in range(40)) + "\n```")
    return "\n\n".join(parts)


@pytest.mark.parametrize("limit", [2000, 4000])
def test_long_reply_with_code_splits_into_balanced_chunks(limit: int) -> None:
    text = long_reply()
    assert len(text) > 9000
    chunks = split_text(text, limit)
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(chunk) <= limit
        assert fences_balanced(chunk), chunk[:200]
    # every code line survives exactly once
    joined = "\n".join(chunks)
    for i in range(12):
        for j in range(40):
            assert len(re.findall(rf"print\({i}, {j}\)", joined)) == 1


def test_fence_cut_in_two_reopens_with_its_language() -> None:
    text = "```js\n" + "\n".join(f"console.log({n});" for n in range(400)) + "\n```"
    chunks = split_text(text, 500)
    assert all(c.startswith("```js\n") for c in chunks)
    assert all(c.rstrip().endswith("```") for c in chunks)


def test_short_text_is_untouched_and_words_are_not_cut() -> None:
    assert split_text("hello", 100) == ["hello"]
    text = " ".join(f"word{n}" for n in range(500))
    chunks = split_text(text, 200)
    assert " ".join(chunks).split() == text.split()


def test_unbreakable_text_is_hard_cut_without_loss() -> None:
    text = "x" * 1000
    chunks = split_text(text, 300)
    assert "".join(chunks) == text and all(len(c) <= 300 for c in chunks)
