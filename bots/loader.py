"""Load a bot folder: ``bot.toml`` (plus ``PARLEY_BOT__*`` overrides), ``personas/*.toml`` (plus the shared
ones), knowledge, ``plugin.py``.

A bot folder may live anywhere: ``--bot support`` names a shipped bot, ``--bot ./mybot`` a folder. Its
``plugin.py`` is imported as a package rooted at the folder (``parley_bot_<name>_<digest of the path>``),
so a plugin can import its sibling modules relatively (``from . import helpers``); shipped bots keep
their ``bots.<name>`` package.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from core.bot import BotConfig, BotSpec, parse_bot_config
from core.errors import ConfigError
from core.overrides import Override, apply_overrides, read_overrides
from core.personas import load_personas
from core.plugin import Plugin

BOTS_DIR = Path(__file__).resolve().parent
SHARED_PERSONAS = BOTS_DIR / "common" / "personas"


def available_bots(root: Path = BOTS_DIR) -> list[str]:
    return sorted(p.parent.name for p in root.glob("*/bot.toml"))


def bot_folder(name_or_path: str, *, root: Path = BOTS_DIR) -> Path:
    """The folder ``--bot`` names: a path holding ``bot.toml``, else a shipped bot's folder."""
    folder = Path(name_or_path)
    if not (folder / "bot.toml").is_file():
        folder = root / name_or_path
    if not (folder / "bot.toml").is_file():
        known = ", ".join(available_bots(root)) or "none"
        raise ConfigError(f"--bot {name_or_path}: no bot.toml there (shipped bots: {known})")
    return folder.resolve()


@dataclass(frozen=True)
class BotSource:
    """What ``bot.toml`` said and what the environment changed: ``parley config`` shows both."""

    folder: Path
    raw: dict[str, Any]
    overrides: list[Override] = field(default_factory=list)


def read_bot_source(
    name_or_path: str, environ: Mapping[str, str] | None = None, *, root: Path = BOTS_DIR
) -> BotSource:
    folder = bot_folder(name_or_path, root=root)
    source = folder / "bot.toml"
    try:
        raw: dict[str, Any] = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return BotSource(folder, raw, read_overrides(environ or {}, BotConfig))


def load_bot(
    name_or_path: str, *, environ: Mapping[str, str] | None = None, root: Path = BOTS_DIR
) -> BotSpec:
    """The bot ``--bot`` names. ``environ``: where ``PARLEY_BOT__*`` overrides are read (the CLI passes the
    process environment and ``.env``); None: ``bot.toml`` as written."""
    src = read_bot_source(name_or_path, environ, root=root)
    folder = src.folder
    source = folder / "bot.toml"
    config = parse_bot_config(apply_overrides(src.raw, src.overrides), source)
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
    plugin = load_plugin(folder, config, root=root) if (folder / "plugin.py").is_file() else None
    return BotSpec(
        name=config.name, folder=folder, config=config, personas=personas, knowledge=knowledge, plugin=plugin
    )


def _plugin_module(folder: Path, name: str, root: Path) -> ModuleType:
    if folder.parent == root.resolve():
        return importlib.import_module(f"bots.{folder.name}.plugin")
    # one package per folder: two folders with the same bot name never share a cached module
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:10]
    package = f"parley_bot_{name.replace('-', '_')}_{digest}"
    for cached in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[cached]  # each load reads the folder as it is now (the files may have changed)
    importlib.invalidate_caches()
    # a package rooted at the folder: relative imports work in plugin.py
    spec = importlib.util.spec_from_loader(package, loader=None, is_package=True)
    if spec is None or spec.submodule_search_locations is None:
        raise ConfigError(f"{folder}: cannot make a package for its plugin.py")
    spec.submodule_search_locations.append(str(folder))
    sys.modules[package] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{package}.plugin")


def load_plugin(folder: Path, config: BotConfig, *, root: Path = BOTS_DIR) -> Plugin:
    """Import ``folder/plugin.py`` and call its ``make_plugin(config)``. Anything that goes wrong is one
    ConfigError naming the file: a broken plugin must stop the bot, never vanish silently."""
    path = folder / "plugin.py"
    try:
        module = _plugin_module(folder, config.name, root)
        make = getattr(module, "make_plugin", None)
        if not callable(make):
            raise ConfigError(f"{path}: defines no make_plugin(config) (see core/plugin.py)")
        plugin = make(config)
    except ConfigError:
        raise
    except Exception as exc:  # a plugin is user code: any error it raises is reported as its own
        where = ""
        tb = exc.__traceback__
        while tb is not None:  # the deepest frame inside the plugin's folder, for the line number
            if Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(folder):
                where = f" (line {tb.tb_lineno})"
            tb = tb.tb_next
        raise ConfigError(f"{path}: plugin failed to load{where}: {type(exc).__name__}: {exc}") from None
    missing = [
        name
        for name in ("commands", "before_turn", "after_turn")
        if not callable(getattr(plugin, name, None))
    ]
    if missing:
        raise ConfigError(
            f"{path}: make_plugin returned a {type(plugin).__name__} without {', '.join(missing)} "
            "(subclass core.plugin.BasePlugin)"
        )
    return plugin  # type: ignore[no-any-return]
