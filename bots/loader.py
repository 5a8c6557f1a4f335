"""Load a bot folder: ``bot.toml``, ``personas/*.toml`` (plus the shared ones), knowledge, ``plugin.py``."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any

from core.bot import BotPlugin, BotSpec, parse_bot_config
from core.errors import ConfigError
from core.personas import load_personas

BOTS_DIR = Path(__file__).resolve().parent
SHARED_PERSONAS = BOTS_DIR / "common" / "personas"


def available_bots(root: Path = BOTS_DIR) -> list[str]:
    return sorted(p.parent.name for p in root.glob("*/bot.toml"))


def load_bot(name_or_path: str, *, root: Path = BOTS_DIR) -> BotSpec:
    folder = Path(name_or_path)
    if not (folder / "bot.toml").is_file():
        folder = root / name_or_path
    source = folder / "bot.toml"
    if not source.is_file():
        known = ", ".join(available_bots(root)) or "none"
        raise ConfigError(f"--bot {name_or_path}: no bot.toml there (shipped bots: {known})")
    try:
        raw: dict[str, Any] = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    config = parse_bot_config(raw, source)
    personas = load_personas(SHARED_PERSONAS, folder / "personas")
    if not personas:
        raise ConfigError(f"{folder / 'personas'}: no persona files")
    knowledge = ""
    if config.knowledge:
        path = folder / config.knowledge
        try:
            knowledge = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{source}: knowledge: cannot read {path}: {exc.strerror}") from None
    plugin: BotPlugin | None = None
    if (folder / "plugin.py").is_file() and folder.parent == root:
        module = importlib.import_module(f"bots.{folder.name}.plugin")
        plugin = module.make_plugin(config)
    return BotSpec(
        name=config.name, folder=folder, config=config, personas=personas, knowledge=knowledge, plugin=plugin
    )
