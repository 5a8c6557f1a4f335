"""docs/tutorial.md stays true: its files are written and its ``$ parley ...`` commands run, in order, in a
scratch folder, in-process (``bots.cli.main``), with the fake OpenAI-compatible server as the model.

The page's own markers say what to do with a code block: ``<!-- file: PATH -->`` writes the block that
follows, ``<!-- append: PATH -->`` appends it, ``<!-- replace: PATH: OLD => NEW -->`` edits a file. A
``console`` block's ``$`` lines are commands (``NAME=value`` before ``parley`` sets the environment for that
command); ``text`` blocks are shown, not run."""

from __future__ import annotations

import io
import re
import shlex
import sys
from pathlib import Path

import pytest

from bots.cli import main
from tests.builders.test_builders import fake_server, scratch  # noqa: F401 - fixtures
from tests.fakes.openai_server import FakeOpenAI

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
BLOCK = re.compile(r"(?:<!-- (file|append): (\S+) -->\n)?```(\w+)\n(.*?)```", re.DOTALL)
REPLACE = re.compile(r"<!-- replace: (\S+): (.+?) => (.+?) -->")


def steps(text: str) -> list[tuple[str, ...]]:
    """The page as a list of actions, in order: ("write"|"append", path, body), ("replace", path, old, new),
    ("run", command line)."""
    found: list[tuple[int, tuple[str, ...]]] = []
    for m in BLOCK.finditer(text):
        action, path, lang, body = m.groups()
        if action:
            found.append((m.start(), ("write" if action == "file" else "append", path, body)))
        elif lang == "console":
            lines = [line[2:] for line in body.splitlines() if line.startswith("$ ")]
            found.extend((m.start(), ("run", line)) for line in lines)
    found.extend((m.start(), ("replace", *m.groups())) for m in REPLACE.finditer(text))
    return [step for _, step in sorted(found)]


def run(line: str, monkeypatch: pytest.MonkeyPatch) -> int:
    words = shlex.split(line)
    with monkeypatch.context() as env:
        while "=" in words[0]:
            name, _, value = words.pop(0).partition("=")
            env.setenv(name, value)
        assert words[0] == "parley", line
        if words[1] == "chat":  # a person would type; the test says hello and leaves
            env.setattr(sys, "stdin", io.StringIO("hello\n/about\n/quit\n"))
        return main(words[1:])


def test_the_tutorial_works_as_written(
    fake_server: tuple[str, FakeOpenAI],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = fake_server
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_MODEL", "fake-model")
    actions = steps(TUTORIAL.read_text(encoding="utf-8"))
    assert sum(1 for a in actions if a[0] == "run") >= 6
    for action in actions:
        if action[0] == "run":
            assert run(action[1], monkeypatch) == 0, (action[1], capsys.readouterr())
        elif action[0] == "write":
            Path(action[1]).write_text(action[2], encoding="utf-8")
        elif action[0] == "append":
            with Path(action[1]).open("a", encoding="utf-8") as f:
                f.write("\n" + action[2])
        else:
            path = Path(action[1])
            text = path.read_text(encoding="utf-8")
            assert action[2] in text, action
            path.write_text(text.replace(action[2], action[3]), encoding="utf-8")
    out = capsys.readouterr().out
    assert "6 passed, 0 failed" in out  # the last `parley test`: four shipped cases and the page's two
    assert "Built with Parley" in out  # the chat reached the plugin's command
    assert "(env PARLEY_BOT__LIMITS__MAX_INPUT_CHARS)" in out
