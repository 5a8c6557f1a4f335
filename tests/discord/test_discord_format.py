"""Model Markdown -> Discord text: mentions neutralised, links kept from unfurling, tables and headings."""

from __future__ import annotations

import re

import pytest

from adapters.discord.format import ZWSP, neutralise_mentions, to_discord

PINGS = re.compile(r"@(everyone|here)|<@[!&]?\d+>")


@pytest.mark.parametrize(
    "text",
    [
        "@everyone look!",
        "hey @here",
        "@Everyone too",
        "<@123456789012345678> you",
        "<@!123456789012345678> nick form",
        "<@&987654321098765432> role",
        "in code ```@everyone```",
    ],
)
def test_no_mention_survives(text: str) -> None:
    out = to_discord(text)
    assert not PINGS.search(out), out
    assert out.replace(ZWSP, "") == text  # only a zero-width space was added: the text still reads the same


def test_channel_links_are_kept() -> None:
    assert neutralise_mentions("see <#123>") == "see <#123>"


def test_bare_urls_do_not_unfurl() -> None:
    assert to_discord("see https://example.com/a?b=1.") == "see <https://example.com/a?b=1>."
    assert to_discord("(https://example.com)") == "(<https://example.com>)"


def test_masked_links_do_not_unfurl() -> None:
    assert to_discord("[docs](https://example.com/x)") == "[docs](<https://example.com/x>)"


def test_links_inside_code_blocks_are_untouched() -> None:
    text = "```\ncurl https://example.com\n```"
    assert to_discord(text) == text


def test_deep_headings_become_bold_and_shallow_ones_stay() -> None:
    assert to_discord("### Act I\n#### Scene 2") == "### Act I\n**Scene 2**"


def test_tables_go_in_a_code_block() -> None:
    text = "Scores:\n| name | pts |\n|---|---|\n| Ann | 3 |\nThat's all."
    out = to_discord(text)
    assert out == "Scores:\n```\n| name | pts |\n|---|---|\n| Ann | 3 |\n```\nThat's all."


def test_formatting_is_idempotent() -> None:
    text = "@everyone <@1> https://x.org [a](https://y.org)\n| a | b |\n|---|---|\n| 1 | 2 |\n##### deep"
    once = to_discord(text)
    assert to_discord(once) == once


def test_plain_markdown_is_kept() -> None:
    text = "**bold** _it_ `code`\n- item\n> quote\n```python\nprint('hi')\n```"
    assert to_discord(text) == text


def test_every_scheme_form_discord_links_is_wrapped() -> None:
    assert to_discord("HTTPS://a.b/c and Https://d.e") == "<HTTPS://a.b/c> and <Https://d.e>"
    # Glued to a word or a slash: Discord still links from the scheme on; so do we.
    assert to_discord("xhttps://a.b/q?x=1") == "x<https://a.b/q?x=1>"
    assert to_discord("/https://a.b.") == "/<https://a.b>."
    assert to_discord("[t](HTTPS://a.b)") == "[t](<HTTPS://a.b>)"
    assert to_discord("<https://a.b> [t](<https://c.d>)") == "<https://a.b> [t](<https://c.d>)"


def test_a_persona_with_previews_keeps_its_links() -> None:
    assert to_discord("see https://a.b", wrap_links=False) == "see https://a.b"
