"""``parley new NAME [--template minimal|support|arcade] [--dir PARENT]``: a bot folder that runs at once.

``minimal`` is a small bot of its own (a persona, a knowledge page, a plugin with one tool and one command,
conversation tests); ``support`` and ``arcade`` copy the shipped bots under the new name. Either way the
folder runs with ``parley chat --bot ./NAME`` and passes ``parley test --bot ./NAME``.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path
from typing import Any

from core.errors import ConfigError

TEMPLATES = Path(__file__).resolve().parent / "templates"
SHIPPED = Path(__file__).resolve().parent
CHOICES = ("minimal", "support", "arcade")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")  # as bot.toml's name
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "__init__.py")


def add_parser(sub: Any) -> None:
    new = sub.add_parser("new", help="create a bot folder from a template")
    new.add_argument("name", help="the bot's name (lower case, digits, - and _): also the folder's name")
    new.add_argument("--template", choices=CHOICES, default="minimal", help="what to start from")
    new.add_argument("--dir", type=Path, default=Path(), help="where to create the folder (default: here)")


def _fill(text: str, name: str) -> str:
    return text.replace("{{name}}", name).replace(
        "{{display_name}}", name.replace("-", " ").replace("_", " ").title()
    )


def create(name: str, template: str, parent: Path) -> Path:
    if not _NAME.match(name):
        raise ConfigError(
            f"new: {name!r} is not a bot name (a lower-case letter, then up to 31 of a-z 0-9 - _)"
        )
    if template not in CHOICES:
        raise ConfigError(f"new: --template {template!r}: choose one of {', '.join(CHOICES)}")
    folder = parent / name
    if folder.exists():
        raise ConfigError(f"new: {folder} exists already: pick another name or --dir")
    source = TEMPLATES / "minimal" if template == "minimal" else SHIPPED / template
    shutil.copytree(source, folder, ignore=_SKIP)
    for path in folder.rglob("*"):
        if path.suffix in {".toml", ".py", ".md"} and path.is_file():
            text = path.read_text(encoding="utf-8")
            if template != "minimal" and path == folder / "bot.toml":
                text = re.sub(r'(?m)^name = "[^"]*"', f'name = "{name}"', text, count=1)
            path.write_text(_fill(text, name), encoding="utf-8")
    return folder


def run(args: argparse.Namespace) -> int:
    folder = create(args.name, args.template, args.dir)
    shown = str(folder) if folder.is_absolute() else f"./{folder}"
    print(f"created {shown}/ from the {args.template} template. Next:")
    print(f"  parley test --bot {shown}      # its conversation tests (offline, scripted model)")
    print(f"  parley chat --bot {shown}      # talk to it (needs OPENAI_API_KEY or OPENAI_BASE_URL)")
    print("  docs/tutorial.md walks through a persona, a tool, a knowledge page and a test.")
    return 0
