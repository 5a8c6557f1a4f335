"""Moderation profiles: per category, what happens on input and on output.

A bot picks a built-in profile in ``[moderation] profile`` and may override any part of it in the same table
(``on_error``, ``timeout_seconds``, ``thresholds``, ``actions``, ``output_actions``, ...). Categories:

- the moderation endpoint's 13 (``harassment``, ``hate``, ``self-harm``, ``sexual/minors``, ``violence``,
  ...), each with a score threshold;
- local rules: ``blocked`` (the block-list patterns), ``prompt_injection`` (known jailbreak phrasing and fake
  role markers), ``links`` (URLs to domains outside ``link_domains``), ``pii`` and ``secret`` (what the
  redactor finds), ``mentions`` (@everyone, <!channel>, user and role pings), ``invisible_chars``
  (zero-width characters, bidirectional overrides, Unicode tags);
- decided by the engine, not configurable: ``prompt_leak`` (the canary or the system prompt in a reply:
  always refused and flagged) and ``too_long`` (over ``[limits] max_input_chars``: refused).

Actions: ``allow``; ``refuse`` (the persona's refusal text); ``redact`` (remove the offending span, or the
whole text when the endpoint gives no span); ``flag`` (allow, and report to the moderators' channel).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from core.errors import ConfigError
from core.moderation import Action

ENDPOINT_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
LOCAL_CATEGORIES = ("blocked", "prompt_injection", "links", "pii", "secret", "mentions", "invisible_chars")
CATEGORIES = ENDPOINT_CATEGORIES + LOCAL_CATEGORIES
SEVERITY = {Action.ALLOW: 0, Action.FLAG: 1, Action.REDACT: 2, Action.REFUSE: 3}

Stage = Literal["input", "output"]
OnError = Literal["open", "closed"]


@dataclass(frozen=True)
class Profile:
    name: str
    endpoint: bool  # ask the moderation endpoint (else local rules only)
    on_error: OnError  # endpoint down or slow: "open" lets the text through, "closed" refuses it
    timeout: float  # seconds before the endpoint counts as down for this check
    stream_checks: Literal["local", "full"]  # while a reply streams: local rules only, or the endpoint too
    flag_refusals: bool  # report every refusal to the moderators' channel, not only "flag" actions
    thresholds: Mapping[str, float]
    input_actions: Mapping[str, Action]
    output_actions: Mapping[str, Action]
    link_domains: tuple[str, ...] = ()
    blocked_category: str = "blocked"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def action(self, stage: Stage, category: str) -> Action:
        table = self.input_actions if stage == "input" else self.output_actions
        return table.get(category, Action.REFUSE)

    def describe(self) -> str:
        endpoint = (
            f"moderation endpoint on (fail-{self.on_error}, {self.timeout:g}s timeout)"
            if self.endpoint
            else "local rules only"
        )
        return f"profile {self.name}: {endpoint}"


def _table(default: Action, overrides: Mapping[str, Action]) -> dict[str, Action]:
    return {**dict.fromkeys(CATEGORIES, default), **overrides}


def _thresholds(default: float, overrides: Mapping[str, float]) -> dict[str, float]:
    return {**dict.fromkeys(ENDPOINT_CATEGORIES, default), **overrides}


A, R, X, F = Action.ALLOW, Action.REFUSE, Action.REDACT, Action.FLAG

_LOCAL_INPUT = {"links": A, "pii": A, "secret": X, "mentions": A, "invisible_chars": X}
_LOCAL_OUTPUT = {
    "links": A,
    "pii": X,
    "secret": X,
    "mentions": X,
    "invisible_chars": X,
    "prompt_injection": A,
}

BUILTIN_PROFILES: dict[str, Profile] = {
    # Customer service: anything doubtful is refused; the endpoint must answer (fail-closed); personal data
    # never reaches the LLM; replies may only link to allowed domains; refusals go to the moderators.
    "strict": Profile(
        name="strict",
        endpoint=True,
        on_error="closed",
        timeout=3.0,
        stream_checks="full",
        flag_refusals=True,
        thresholds=_thresholds(0.4, {"sexual/minors": 0.1, "self-harm": 0.3, "self-harm/intent": 0.3}),
        input_actions=_table(R, {**_LOCAL_INPUT, "pii": X, "prompt_injection": R}),
        output_actions=_table(R, {**_LOCAL_OUTPUT, "links": X}),
    ),
    # A sensible middle: the endpoint refuses clear harm but a failure lets messages through (fail-open);
    # jailbreak phrasing is answered (the prompt defends itself) and flagged.
    "standard": Profile(
        name="standard",
        endpoint=True,
        on_error="open",
        timeout=2.0,
        stream_checks="full",
        flag_refusals=True,
        thresholds=_thresholds(0.5, {"sexual/minors": 0.1}),
        input_actions=_table(R, {**_LOCAL_INPUT, "prompt_injection": F}),
        output_actions=_table(R, _LOCAL_OUTPUT),
    ),
    # Games and stories: fictional violence, trash talk and heists are flagged, not refused; hate, sexual
    # content, self-harm and anything involving minors are still refused. Streams are checked by local rules;
    # the endpoint sees the input and the final reply.
    "relaxed": Profile(
        name="relaxed",
        endpoint=True,
        on_error="open",
        timeout=1.5,
        stream_checks="local",
        flag_refusals=False,
        thresholds=_thresholds(
            0.7,
            {
                "sexual/minors": 0.1,
                "self-harm": 0.5,
                "violence": 0.85,
                "violence/graphic": 0.85,
                "harassment": 0.8,
            },
        ),
        input_actions=_table(
            R,
            {
                **_LOCAL_INPUT,
                "prompt_injection": F,
                "violence": F,
                "violence/graphic": F,
                "harassment": F,
                "illicit": F,
            },
        ),
        output_actions=_table(R, {**_LOCAL_OUTPUT, "violence": F, "violence/graphic": F}),
    ),
    # No moderation endpoint (offline or local-model set-ups): the local rules of "standard" only.
    "local": Profile(
        name="local",
        endpoint=False,
        on_error="open",
        timeout=1.0,
        stream_checks="local",
        flag_refusals=True,
        thresholds=_thresholds(0.5, {"sexual/minors": 0.1}),
        input_actions=_table(R, {**_LOCAL_INPUT, "prompt_injection": F}),
        output_actions=_table(R, _LOCAL_OUTPUT),
    ),
}


def resolve_profile(cfg: Any, *, source: str) -> Profile:
    """The bot's ``[moderation]`` table (a :class:`core.bot.ModerationConfig`) -> its :class:`Profile`.

    Unknown profiles and categories are :class:`ConfigError` naming the field."""
    base = BUILTIN_PROFILES.get(cfg.profile)
    if base is None:
        raise ConfigError(
            f"{source}: moderation.profile: unknown profile {cfg.profile!r} "
            f"(known: {', '.join(BUILTIN_PROFILES)})"
        )
    blocked = cfg.blocked_category or "blocked"

    def category(name: str, field_name: str, allowed: tuple[str, ...]) -> str:
        key = "blocked" if name == blocked else name
        if key not in allowed:
            raise ConfigError(
                f"{source}: moderation.{field_name}.{name}: unknown category (known: {', '.join(allowed)})"
            )
        return key

    thresholds = dict(base.thresholds)
    for name, value in cfg.thresholds.items():
        thresholds[category(name, "thresholds", ENDPOINT_CATEGORIES)] = float(value)
    inputs = dict(base.input_actions)
    outputs = dict(base.output_actions)
    for name, value in cfg.actions.items():
        key = category(name, "actions", CATEGORIES)
        inputs[key] = outputs[key] = Action(value)
    for name, value in cfg.output_actions.items():
        outputs[category(name, "output_actions", CATEGORIES)] = Action(value)
    domains = []
    for i, domain in enumerate(cfg.link_domains):
        d = str(domain).strip().lower().lstrip(".")
        if not d or "/" in d or " " in d:
            raise ConfigError(
                f"{source}: moderation.link_domains[{i}]: expected a domain such as example.com"
            )
        domains.append(d)

    def pick(name: str) -> Any:
        value = getattr(cfg, name)
        return getattr(base, name) if value is None else value

    if blocked != "blocked":  # block-list hits are reported under the configured category name
        inputs[blocked] = inputs.pop("blocked")
        outputs[blocked] = outputs.pop("blocked")
    return Profile(
        name=base.name,
        endpoint=pick("endpoint"),
        on_error=pick("on_error"),
        timeout=float(cfg.timeout_seconds if cfg.timeout_seconds is not None else base.timeout),
        stream_checks=pick("stream_checks"),
        flag_refusals=pick("flag_refusals"),
        thresholds=MappingProxyType(thresholds),
        input_actions=MappingProxyType(inputs),
        output_actions=MappingProxyType(outputs),
        link_domains=tuple(domains),
        blocked_category=blocked,
    )
