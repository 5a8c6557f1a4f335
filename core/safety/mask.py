"""One way to hide secrets in anything shown or logged: by structure, at any depth.

- URLs: the password in userinfo (``http://user:pw@host``; a lone ``token@host`` too) and the values of
  secret-looking query parameters become ``********``; :func:`mask_text` does it to every URL in free text
  (error messages, ``parley check`` problems, log fields).
- Structures (settings models, mappings, lists, at any depth): a ``SecretStr``; any value whose key names a
  secret (key, token, secret, password, auth, credential ...); every value of an ``env`` or ``headers`` map
  (an MCP server's environment holds API keys under any name); and URLs in every remaining string.

Used by the console's settings page (:func:`masked_settings`), ``parley check``, the CLI's error lines and
the log processor (core/safety/logs.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr

MASK = "********"
SECRET_WORDS = (
    "key", "token", "secret", "password", "passwd", "pwd", "auth", "credential", "cookie", "signature",
    "redis_url", "dsn",
)  # fmt: skip
WHOLE_MAPS = frozenset({"env", "environ", "environment", "headers", "extra_headers"})
_SECRET_PARAMS = re.compile(r"(?i)(key|token|secret|password|passwd|pwd|sig|signature|auth|code|credential)")
# scheme://userinfo@ ... : a URL with credentials, wherever it appears in text
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,15}://[^\s\"'<>]+")


def secret_key(name: str) -> bool:
    lower = name.lower()
    return any(word in lower for word in SECRET_WORDS)


def mask_url(url: str) -> str:
    """``url`` without its password and secret query values (anything unparseable comes back as is)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, host = netloc.rpartition("@")
            user, colon, _password = userinfo.partition(":")
            netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(_SECRET_PARAMS.search(k) for k, _ in pairs):
                query = urlencode([(k, MASK if _SECRET_PARAMS.search(k) else v) for k, v in pairs], safe="*")
        if netloc == parts.netloc and query == parts.query:
            return url
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return url


def mask_text(text: str) -> str:
    """Every URL in ``text`` masked (:func:`mask_url`); nothing else changes."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: mask_url(m.group(0)), text)


def masked(value: Any, key: str = "", *, whole: bool = False, secret: tuple[str, str] = (MASK, "")) -> Any:
    """``value`` with its secrets replaced by ``MASK`` (same shape: models become dicts). ``secret``: what a
    ``SecretStr`` shows when set and when empty."""
    if isinstance(value, SecretStr):
        return secret[0] if value.get_secret_value() else secret[1]
    if isinstance(value, BaseModel):
        value = {name: getattr(value, name) for name in type(value).model_fields}
    if isinstance(value, Mapping):
        inner_whole = whole or key.lower() in WHOLE_MAPS
        return {k: masked(v, str(k), whole=inner_whole, secret=secret) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [masked(v, key, whole=whole, secret=secret) for v in value]
    if value in (None, "") or isinstance(value, bool | int | float):
        return MASK if whole and value not in (None, "") else value
    if whole or secret_key(key):
        return MASK
    return mask_text(str(value)) if isinstance(value, str) else value


def masked_settings(value: Any, *, secret: tuple[str, str] = (MASK, "")) -> dict[str, str]:
    """Settings flattened to ``dotted.path[i].name -> text``, secrets masked (the console's settings page)."""
    out: dict[str, str] = {}
    _flatten("", masked(value, secret=secret), out)
    return out


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and any(isinstance(v, Mapping | list) for v in value):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        out[prefix] = "" if value is None else str(value)
