"""Where the shipped bots live. A module of its own so ``parley --help`` can list them without loading one."""

from __future__ import annotations

from pathlib import Path

BOTS_DIR = Path(__file__).resolve().parent


def available_bots(root: Path = BOTS_DIR) -> list[str]:
    """The shipped bots: folders of bots/ holding a bot.toml."""
    return sorted(p.parent.name for p in root.glob("*/bot.toml"))
