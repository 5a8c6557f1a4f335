"""``parley config --bot NAME``: the bot's effective settings, one per line, with where each came from.

Sources: ``env PARLEY_BOT__...`` (an override), ``bot.toml``, or ``default``. Values under keys that name
secrets (tokens, keys, passwords, an MCP server's ``env``) and credentials inside URLs are masked.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping
from typing import Any

from bots.loader import read_bot_source
from core.bot import BotSpec
from core.overrides import leaves, source_of

# whole words of a key: "bot_token" and "api_key" are secrets, "user_daily_tokens" is not
_SECRET_KEY = re.compile(r"(?i)(^|[_-])(token|secret|password|passwd|api[_-]?key|credentials?|auth)($|[_-])")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
MASK = "********"


def add_parser(sub: Any, bots: str) -> None:
    config = sub.add_parser("config", help="print a bot's effective settings and where each came from")
    config.add_argument("--bot", required=True, help=f"bot name or folder ({bots})")
    config.add_argument("--json", action="store_true", help="one JSON object: {key: {value, source}}")


def mask(path: tuple[str, ...], value: Any) -> Any:
    """A leaf as it may be shown: secret-named keys and everything in an ``env`` map hidden, URL
    credentials removed."""
    if isinstance(value, Mapping):
        return {k: mask((*path, str(k)), v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(path, v) for v in value]
    if any(_SECRET_KEY.search(part) for part in path) or "env" in path[:-1]:
        return MASK if value not in (None, "") else value
    if isinstance(value, str):
        return _USERINFO.sub(rf"\1{MASK}@", value)
    return value


def effective(spec: BotSpec, environ: Mapping[str, str]) -> list[tuple[str, Any, str]]:
    """(dotted key, shown value, source) for every leaf of the validated config."""
    src = read_bot_source(str(spec.folder), environ)
    dumped = spec.config.model_dump(mode="json")
    rows = []
    for path, value in leaves(dumped):
        rows.append((".".join(path), mask(path, value), source_of(path, src.raw, src.overrides)))
    return rows


def run(args: argparse.Namespace, spec: BotSpec, environ: Mapping[str, str]) -> int:
    rows = effective(spec, environ)
    if args.json:
        print(json.dumps({k: {"value": v, "source": s} for k, v, s in rows}, indent=2, ensure_ascii=False))
        return 0
    width = max(len(k) for k, _, _ in rows)
    print(f"# {spec.name} ({spec.folder / 'bot.toml'}): effective settings")
    for key, value, source in rows:
        print(f"{key:<{width}}  {json.dumps(value, ensure_ascii=False)}  ({source})")
    return 0
