"""Token counting that never downloads: tiktoken when its encoding file is already cached, else an estimate.

tiktoken fetches encoding files on first use; offline (CI, air-gapped hosts) that would hang or fail, so we
look for the cached file ourselves and only then ask tiktoken for the encoding.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
PER_MESSAGE_OVERHEAD = 4  # role and separators, as in OpenAI's chat format accounting


def _cache_dir() -> Path | None:
    configured = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    if configured == "":
        return None
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "data-gym-cache"


def estimate_tokens(text: str) -> int:
    """A deliberately generous estimate: about 3.5 UTF-8 bytes per token, at least one per word."""
    if not text:
        return 0
    by_bytes = (len(text.encode("utf-8")) * 2 + 6) // 7
    return max(by_bytes, len(text.split()))


def _encoder_for(model: str) -> Callable[[str], int] | None:
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        name = "o200k_base"
    cache = _cache_dir()
    if cache is None or not (cache / hashlib.sha1(_BLOB.format(name=name).encode()).hexdigest()).exists():  # noqa: S324 - tiktoken's cache key
        return None
    encoding = tiktoken.get_encoding(name)
    return lambda text: len(encoding.encode(text, disallowed_special=()))


class TokenCounter:
    """Counts tokens for one model family; ``exact`` says whether tiktoken is behind it."""

    def __init__(self, model: str = "gpt-4o-mini", *, allow_tiktoken: bool = True) -> None:
        encoder = _encoder_for(model) if allow_tiktoken else None
        self.exact = encoder is not None
        self._count = encoder or estimate_tokens
        # System prompts and reference text repeat on every turn: count each distinct one once.
        self._cached = lru_cache(maxsize=128)(self._count)

    def count(self, text: str) -> int:
        return self._count(text)

    def count_messages(self, contents: Iterable[str]) -> int:
        return sum(self._count(c) + PER_MESSAGE_OVERHEAD for c in contents)

    def count_messages_cached(self, contents: Iterable[str]) -> int:
        """As :meth:`count_messages`, for texts that recur turn after turn."""
        return sum(self._cached(c) + PER_MESSAGE_OVERHEAD for c in contents)
