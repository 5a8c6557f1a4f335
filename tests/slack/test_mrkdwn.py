"""Markdown -> Slack mrkdwn conversion and output safety (pure functions)."""

from __future__ import annotations

import re

import pytest

from adapters.common.split import split_text
from adapters.slack.mrkdwn import WORD_JOINER, escape, sanitise_markdown, to_mrkdwn

# Anything Slack would treat as a control sequence: a ping, a broadcast, a user group, a link.
_CONTROL = re.compile(r"<[!@#]|<https?:|<mailto:")


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold**", "*bold*"),
        ("__bold__", "*bold*"),
        ("*italic*", "_italic_"),
        ("_italic_", "_italic_"),
        ("~~gone~~", "~gone~"),
        ("a **b** *c* d", "a *b* _c_ d"),
        ("# Title", "*Title*"),
        ("### Sub **title** ###", "*Sub title*"),
        ("- one\n- two", "• one\n• two"),
        ("* one\n  + nested", "• one\n  • nested"),
        ("1. first", "1. first"),
        ("> quoted **x**", "> quoted *x*"),
        ("[docs](https://example.com/a_b)", "<https://example.com/a_b|docs>"),
        ("<https://example.com>", "<https://example.com>"),
        ("[x](https://e.com/?a=1&b=2)", "<https://e.com/?a=1&amp;b=2|x>"),
        ("[mail](mailto:help@acme.test)", "<mailto:help@acme.test|mail>"),
        ("see https://e.com/a_b_c_d for *it*", "see https://e.com/a_b_c_d for _it_"),
        ("2 < 3 & 5 > 4", "2 &lt; 3 &amp; 5 &gt; 4"),
        ("snake_case_name stays", "snake_case_name stays"),
    ],
)
def test_markdown_to_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_code_kept_intact_apart_from_escaping() -> None:
    md = (
        "Run `a **b** <c>`:\n```python\nif a < b and **kw:\n    print('*x*', \"[l](http://x)\")\n```\n"
        "Done **now**."
    )
    out = to_mrkdwn(md)
    assert out == (
        "Run `a **b** &lt;c&gt;`:\n```\nif a &lt; b and **kw:\n    print('*x*', \"[l](http://x)\")\n```\n"
        "Done *now*."
    )


def test_unclosed_fence_while_streaming_stays_code() -> None:
    assert to_mrkdwn("text\n```\ncode **x**") == "text\n```\ncode **x**"


@pytest.mark.parametrize(
    "hostile",
    [
        "<!channel> everyone look",
        "<!here|here>",
        "<!everyone>",
        "ping <@U012AB3CD> now",
        "<@W123|boss>",
        "<!subteam^S0614TZR7|@support>",
        "<#C024BE7LR|general>",
        "<https://evil.test|innocent text>",
        "`<!channel>` in code",
        "```\n<!here>\n```",
        "[click](https://x.test|<!channel>)",
        "&lt;!channel&gt; pre-escaped",
    ],
)
def test_model_cannot_produce_control_sequences(hostile: str) -> None:
    out = to_mrkdwn(hostile)
    # Every '<' that survives starts a link we built from a [text](url) — check none is a ping.
    assert "<!" not in out
    assert "<@" not in out
    assert "<#" not in out
    assert "<https://evil.test|" not in out


@pytest.mark.parametrize("word", ["@here", "@channel", "@everyone", "@Here", "@EVERYONE"])
def test_plain_broadcast_words_are_broken(word: str) -> None:
    out = to_mrkdwn(f"hey {word}, and [{word}](https://x.test)")
    assert word not in out
    assert out.count("@" + WORD_JOINER) == 2


def test_unsafe_link_schemes_are_not_links() -> None:
    out = to_mrkdwn("[x](javascript:alert) [y](slack://open) [z](ftp://h/f)")
    assert "<" not in out


def test_escape() -> None:
    assert escape("<a&b>") == "&lt;a&amp;b&gt;"


def test_sanitise_markdown_for_native_streaming() -> None:
    out = sanitise_markdown("**hi** <!channel> <@U1> <#C1> <!subteam^S1> @everyone `code`")
    assert not _CONTROL.search(out)
    assert "@everyone" not in out
    assert out.startswith("**hi** <")  # Markdown itself is untouched


def test_sanitise_is_prefix_stable_at_word_boundaries() -> None:
    full = "say <!here> to @channel now"
    cut = full.index(" to")
    assert sanitise_markdown(full).startswith(sanitise_markdown(full[:cut]))


def test_long_reply_with_code_splits_into_balanced_chunks() -> None:
    para = "Some *explanation* text that goes on. " * 20
    code = "```python\n" + "\n".join(f"value_{i} = compute({i}) < limit" for i in range(120)) + "\n```"
    md = "\n\n".join([para, code, para, code, para, code])
    assert len(md) > 9_000
    chunks = split_text(to_mrkdwn(md), 4_000)
    assert len(chunks) >= 3
    for chunk in chunks:
        assert len(chunk) <= 4_000
        assert chunk.count("```") % 2 == 0
