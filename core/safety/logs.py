"""A structlog processor that redacts personal data and secrets from every string in a log event.

``core.logging`` already drops message bodies at INFO and above; this catches what slips through anyway (an
exception message quoting user input, a DEBUG line, a token in an error string). Place it after
``format_exc_info`` so formatted tracebacks are covered too::

    processors=[..., drop_bodies, TimeStamper(...), format_exc_info, redact_log_event, renderer]
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from core.safety.mask import MASK, WHOLE_MAPS, mask_text, secret_key
from core.safety.redact import KINDS, build_redactor

_REDACTOR = build_redactor(KINDS, [], source="logging")
_SKIP = frozenset({"timestamp", "level", "log_level", "logger"})


def _clean(value: Any, key: str = "") -> Any:
    if isinstance(value, str):
        if key and (secret_key(key) or key.lower() in WHOLE_MAPS) and value:
            return MASK
        return _REDACTOR.redact(mask_text(value)) if len(value) >= 6 else value
    if isinstance(value, list | tuple):
        return type(value)(_clean(v, key) for v in value)
    if isinstance(value, dict):
        if key.lower() in WHOLE_MAPS:  # an environment or header map: every value may be a secret
            return dict.fromkeys(value, MASK)
        return {k: _clean(v, str(k)) for k, v in value.items()}
    return value


def redact_log_event(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key not in _SKIP:
            event[key] = _clean(value, "" if key == "event" else key)
    return event
