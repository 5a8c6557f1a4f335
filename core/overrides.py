"""Environment overrides for any ``bot.toml`` value, and where each effective value came from.

``PARLEY_BOT__STORY__VOTE_SECONDS=15`` sets ``[story] vote_seconds``;
``PARLEY_BOT__TOOLS__ALLOW='["roll_dice"]'`` sets a list; ``PARLEY_BOT__SLACK__ADMINS='["U01"]'`` reaches
into a platform table. Names are matched without regard to case, ``__`` separates the levels
(pydantic-settings' ``env_nested_delimiter`` convention).

Values are typed by the field they land on: a ``str`` field takes the text as it is
(``PARLEY_BOT__DISPLAY_NAME=007`` stays a string); any other field, or a key inside a free table (``[slack]``,
``[kb]``), takes JSON when the text parses as JSON (numbers, ``true``, lists, objects) and the text otherwise.
An override that names no field is a :class:`~core.errors.ConfigError` naming the variable, so a typo never
passes silently.

We do this by hand rather than with a ``BaseSettings`` subclass because ``parley config`` must say, per value,
whether it came from the environment, ``bot.toml`` or the default; the merge is twenty lines.
"""

from __future__ import annotations

import copy
import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from core.errors import ConfigError

PREFIX = "PARLEY_BOT__"


@dataclass(frozen=True, slots=True)
class Override:
    env: str  # the variable's name, as set
    path: tuple[str, ...]  # lower-cased keys, outermost first
    value: Any


def _field_type(model: type[BaseModel], path: tuple[str, ...], env: str) -> Any:
    """The annotation at ``path`` inside ``model``; ``Any`` once the path enters a free table."""
    current: Any = model
    for depth, key in enumerate(path):
        model_cls = _model_in(current)
        if model_cls is None:
            return Any  # a dict table (platforms, kb): no schema here, the adapter validates it
        fields = model_cls.model_fields
        if key not in fields:
            where = ".".join(path[:depth]) or "bot.toml"
            raise ConfigError(f"{env}: {where} has no setting {key!r} (known: {', '.join(sorted(fields))})")
        current = fields[key].annotation
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _is_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(args) == 1 and _is_text(args[0])
    return False


def _parse(text: str, annotation: Any) -> Any:
    if _is_text(annotation):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_overrides(environ: Mapping[str, str], model: type[BaseModel]) -> list[Override]:
    """Every ``PARLEY_BOT__*`` variable in ``environ`` as a typed override (sorted: deterministic)."""
    found = []
    for name in sorted(environ):
        if not name.upper().startswith(PREFIX):
            continue
        path = tuple(part.lower() for part in name[len(PREFIX) :].split("__"))
        if not all(path):
            raise ConfigError(f"{name}: empty level in the name (use one '__' between levels)")
        found.append(Override(name, path, _parse(environ[name], _field_type(model, path, name))))
    return found


def apply_overrides(raw: Mapping[str, Any], overrides: list[Override]) -> dict[str, Any]:
    """A copy of ``raw`` (the parsed ``bot.toml``) with each override set at its path."""
    merged: dict[str, Any] = copy.deepcopy(dict(raw))
    for item in overrides:
        node = merged
        for key in item.path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[item.path[-1]] = item.value
    return merged


def leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(path, value)`` for each leaf of a nested dict (lists are leaves)."""
    if isinstance(value, Mapping) and value:
        for key, child in value.items():
            yield from leaves(child, (*path, str(key)))
    else:
        yield path, value


def source_of(path: tuple[str, ...], raw: Mapping[str, Any], overrides: list[Override]) -> str:
    """Where the value at ``path`` came from: the variable that set it, ``bot.toml``, or ``default``."""
    for item in reversed(overrides):
        if path[: len(item.path)] == item.path:
            return f"env {item.env}"
    node: Any = raw
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return "default"
        node = node[key]
    return "bot.toml"
