"""Builds the scale-out and operations parts of one runtime from :class:`~core.settings.Settings`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.bot import BotSpec
from core.engine import Engine
from core.keys import KeySpace
from core.llm import LLM
from core.ops.breaker import CircuitBreakerLLM, CircuitState, MeteredLLM, SharedCircuit
from core.ops.delivery import Deliveries
from core.ops.http import EdgeLimits, OpsHttp, parse_networks
from core.ops.jobs import JobSigner
from core.ops.lock import ConversationLocks
from core.ops.metrics import Metrics
from core.ops.pacing import PacedLLM, ProviderBudget, resolve_limits
from core.ops.queue import TurnQueue
from core.ops.worker import TurnWorker
from core.settings import ModelLimits, Settings
from core.tokens import TokenCounter


@dataclass
class Ops:
    """What adapters, the CLI and tests reach through ``runtime.ops``."""

    settings: Settings
    metrics: Metrics
    locks: ConversationLocks
    queue: TurnQueue | None  # None with PARLEY_QUEUE=false
    deliveries: Deliveries
    http: OpsHttp
    spec: BotSpec
    client: aioredis.Redis
    keys: KeySpace
    breaker: CircuitBreakerLLM | None = None
    pacer: PacedLLM | None = None
    _closed: bool = field(default=False, repr=False)

    def wrap_llm(self, llm: LLM) -> LLM:
        """Meter ``llm``, pace it by the shared provider budget (unless PARLEY_LLM_PACING=false) and put the
        circuit breaker in front (unless PARLEY_LLM_BREAKER_FAILURES=0): the breaker sees a call's outcome
        after the pacer's 429 retries, so a burst of paced 429s does not open it."""
        wrapped: LLM = MeteredLLM(llm, self.metrics)
        s = self.settings
        if s.parley_llm_pacing:
            self.pacer = PacedLLM(
                wrapped,
                ProviderBudget(self.client, self.keys),
                limits=self.provider_limits(),
                counter=TokenCounter(s.openai_model),
                max_wait=s.parley_llm_pace_max_wait,
                retries=s.parley_llm_rate_retries,
                metrics=self.metrics,
            )
            self.pacer.observe(llm)
            wrapped = self.pacer
        if s.parley_llm_breaker_failures:
            self.breaker = CircuitBreakerLLM(
                wrapped,
                failures=s.parley_llm_breaker_failures,
                reset_after=s.parley_llm_breaker_reset,
                metrics=self.metrics,
                shared=SharedCircuit(self.client, self.keys, trial_lease=s.parley_llm_total_timeout),
            )
            wrapped = self.breaker
            if s.parley_ready_llm:
                self.http.add_check("llm", self._llm_ready)
        return wrapped

    def provider_limits(self) -> Callable[[str], ModelLimits]:
        """Per-model RPM/TPM: PARLEY_LLM_RPM/_TPM/_MODEL_LIMITS where set, else bot.toml [llm_limits]."""
        s, cfg = self.settings, self.spec.config.llm_limits
        given = s.model_fields_set
        rpm = s.parley_llm_rpm if "parley_llm_rpm" in given else cfg.rpm
        tpm = s.parley_llm_tpm if "parley_llm_tpm" in given else cfg.tpm
        return resolve_limits(rpm, tpm, {**cfg.models, **s.parley_llm_model_limits})

    async def _llm_ready(self) -> str | None:
        if self.breaker is not None and await self.breaker.refresh() is CircuitState.OPEN:
            return "LLM circuit open (the endpoint keeps failing)"
        return None

    def worker(self, engine: Engine) -> TurnWorker:
        if self.queue is None:
            raise RuntimeError("no queue: PARLEY_QUEUE=false")
        s = self.settings
        return TurnWorker(
            engine=engine,
            queue=self.queue,
            locks=self.locks,
            deliveries=self.deliveries,
            metrics=self.metrics,
            concurrency=s.parley_workers,
            claim_idle=s.parley_queue_claim_idle,
            name=s.parley_worker_name,
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.http.aclose()
        await self.deliveries.aclose()


def build_ops(spec: BotSpec, settings: Settings, client: aioredis.Redis, keys: KeySpace) -> Ops:
    metrics = Metrics(spec.name)
    locks = ConversationLocks(
        client,
        keys,
        lease=settings.parley_lock_lease,
        wait=settings.parley_lock_wait,
        heartbeat=settings.heartbeat,
    )
    queue = None
    if settings.parley_queue:
        queue = TurnQueue(
            client,
            keys,
            max_len=settings.parley_queue_max,
            max_per_conversation=settings.parley_queue_max_per_conversation,
            signer=JobSigner.from_keys(
                settings.parley_credentials_keys, max_age_seconds=settings.parley_job_max_age_seconds
            ),
        )
    shared = settings.parley_ops_port == settings.port != 0  # two 0s: two free ports
    http = OpsHttp(
        metrics,
        host=settings.parley_http_host,
        port=settings.port,
        ops_host=settings.parley_ops_host,
        ops_port=None if shared else settings.parley_ops_port,
        limits=EdgeLimits(
            keepalive=settings.parley_http_keepalive,
            body_timeout=settings.parley_http_body_timeout,
            max_connections=settings.parley_http_max_connections,
            max_per_peer=settings.parley_http_max_connections_per_peer,
            trusted_proxies=parse_networks(settings.parley_http_trusted_proxies),
        ),
    )

    async def redis_ready() -> str | None:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            return f"Redis unreachable ({type(exc).__name__})"
        return None

    http.add_check("redis", redis_ready)
    if queue is not None:

        async def refresh_queue() -> None:
            depth, pending = await queue.stats()
            metrics.queue_depth.labels(metrics.bot).set(depth)
            metrics.queue_pending.labels(metrics.bot).set(pending)

        http.add_refresher(refresh_queue)
    return Ops(settings, metrics, locks, queue, Deliveries(), http, spec, client, keys)
