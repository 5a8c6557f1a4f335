"""Prometheus metrics of one bot, in a registry of its own (so tests and several bots never collide).

parley_turns_total{bot,platform,kind}                 turns by outcome (answer/command/refusal/error/ignored)
parley_turn_seconds{bot,platform}                     whole-turn latency
parley_llm_time_to_first_token_seconds{bot}           from request to the first streamed token
parley_tokens_total{bot,platform,direction}           prompt ("in") and completion ("out") tokens
parley_moderation_actions_total{bot,category}         refusals that carry a moderation category
parley_refusals_total{bot,platform,reason}            every refusal by reason
parley_rate_limit_refusals_total{bot,platform}        refusals whose reason is a rate limit or a quota
parley_llm_errors_total{bot,error}                    LLM failures by error class (CircuitOpen included)
parley_llm_circuit_state{bot}                         0 closed, 1 half-open, 2 open
parley_llm_circuit_opens_total{bot}
parley_queue_depth{bot}                               stream entries not yet trimmed (waiting + in progress)
parley_queue_pending{bot}                             entries handed to a worker and not acknowledged
parley_queue_events_total{bot,event}                  queued duplicate busy claimed requeued direct...
parley_turns_in_flight{bot}                           turns running in this process
parley_delivery_failures_total{bot,platform}          replies a Delivery could not show
parley_redis_unavailable_total{bot,where}             operations that found Redis unreachable
parley_tool_calls_total{bot,tool,outcome}             calls by outcome (ok error timeout denied pending ...)
parley_tool_seconds{bot,tool}                         tool call duration
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from core.types import ReplyKind, ReplyResult, Turn

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
RATE_LIMIT_WORDS = ("rate", "quota", "limit", "budget")


class Metrics:
    def __init__(self, bot: str) -> None:
        self.bot = bot
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.turns = Counter("parley_turns", "Turns handled", ["bot", "platform", "kind"], registry=r)
        self.turn_seconds = Histogram(
            "parley_turn_seconds", "Turn latency", ["bot", "platform"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "parley_llm_time_to_first_token_seconds",
            "Time from LLM request to first token",
            ["bot"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("parley_tokens", "Tokens used", ["bot", "platform", "direction"], registry=r)
        self.moderation = Counter(
            "parley_moderation_actions", "Moderation refusals", ["bot", "category"], registry=r
        )
        self.refusals = Counter("parley_refusals", "Refusals", ["bot", "platform", "reason"], registry=r)
        self.rate_limited = Counter(
            "parley_rate_limit_refusals", "Rate-limit and quota refusals", ["bot", "platform"], registry=r
        )
        self.llm_errors = Counter("parley_llm_errors", "LLM failures", ["bot", "error"], registry=r)
        self.circuit_state = Gauge(
            "parley_llm_circuit_state", "LLM circuit: 0 closed, 1 half-open, 2 open", ["bot"], registry=r
        )
        self.circuit_opens = Counter(
            "parley_llm_circuit_opens", "Times the circuit opened", ["bot"], registry=r
        )
        self.llm_paced = Histogram(
            "parley_llm_paced_seconds",
            "Time an LLM call waited for the shared provider budget (calls that waited)",
            ["bot"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_429_retries = Counter(
            "parley_llm_rate_limit_retries",
            "LLM calls retried after a 429 and the shared pause",
            ["bot"],
            registry=r,
        )
        self.queue_depth = Gauge("parley_queue_depth", "Queue entries not yet trimmed", ["bot"], registry=r)
        self.queue_pending = Gauge(
            "parley_queue_pending", "Queue entries being worked on", ["bot"], registry=r
        )
        self.queue_events = Counter("parley_queue_events", "Queue events", ["bot", "event"], registry=r)
        self.in_flight = Gauge("parley_turns_in_flight", "Turns running in this process", ["bot"], registry=r)
        self.delivery_failures = Counter(
            "parley_delivery_failures", "Replies not delivered", ["bot", "platform"], registry=r
        )
        self.redis_unavailable = Counter(
            "parley_redis_unavailable",
            "Operations that found Redis unreachable",
            ["bot", "where"],
            registry=r,
        )
        self.tool_calls = Counter(
            "parley_tool_calls", "Tool calls by outcome", ["bot", "tool", "outcome"], registry=r
        )
        self.tool_seconds = Histogram(
            "parley_tool_seconds", "Tool call duration", ["bot", "tool"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.circuit_state.labels(bot).set(0)
        self.in_flight.labels(bot).set(0)

    def observe_turn(self, turn: Turn, result: ReplyResult, seconds: float) -> None:
        """Count a finished turn (the engine's finish stage)."""
        platform = turn.place.platform
        self.turns.labels(self.bot, platform, result.kind.value).inc()
        self.turn_seconds.labels(self.bot, platform).observe(seconds)
        if result.usage.prompt_tokens:
            self.tokens.labels(self.bot, platform, "in").inc(result.usage.prompt_tokens)
        if result.usage.completion_tokens:
            self.tokens.labels(self.bot, platform, "out").inc(result.usage.completion_tokens)
        if result.kind is ReplyKind.REFUSAL:
            category = result.meta.get("category", "")
            reason = result.meta.get("reason", "") or ("moderation" if category else "other")
            self.refusals.labels(self.bot, platform, reason).inc()
            if category:
                self.moderation.labels(self.bot, category).inc()
            if any(word in reason for word in RATE_LIMIT_WORDS):
                self.rate_limited.labels(self.bot, platform).inc()
        if result.meta.get("memory") in ("unavailable", "not_saved"):
            self.redis_unavailable.labels(self.bot, "turn").inc()

    def observe_tool(self, tool: str, outcome: str, seconds: float) -> None:
        self.tool_calls.labels(self.bot, tool, outcome).inc()
        if seconds:
            self.tool_seconds.labels(self.bot, tool).observe(seconds)

    def event(self, name: str, amount: int = 1) -> None:
        self.queue_events.labels(self.bot, name).inc(amount)

    def render(self) -> bytes:
        return generate_latest(self.registry)
