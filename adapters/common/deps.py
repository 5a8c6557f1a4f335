"""What a platform adapter and its Delivery may use of a running bot: a handful of parts, not the Runtime.

Built once by the CLI (or a test) with :meth:`EdgeDeps.of`. An adapter translates and hands turns to the
dispatcher; a Delivery shows replies; both keep their platform state in Redis under the bot's key space.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from core.bot import BotSpec
from core.commands import CommandRegistry
from core.credentials import CredentialBox
from core.keys import KeySpace
from core.ops.delivery import Dispatcher
from core.ops.http import OpsHttp
from core.types import Place, Turn

if TYPE_CHECKING:
    from core.runtime import Runtime


@dataclass(frozen=True, slots=True)
class EdgeDeps:
    bot: BotSpec
    redis: aioredis.Redis  # platform state: thread marks, tokens, installations, name caches
    keys: KeySpace
    dispatcher: Dispatcher  # where accepted turns go (the queue, or a task it owns)
    commands: CommandRegistry  # what the platform offers as slash commands
    resume: Callable[[Turn], Awaitable[None]]  # a person hands a paused conversation back to the bot
    redact: Callable[[str], str] | None  # the PII redactor, for what adapters show moderators
    http: OpsHttp  # HTTP routes and readiness checks on the runtime's server
    # (pending id, the click as a turn) -> what a click on a proposed call's buttons is told privately, ""
    # when it may go ahead (then the buttons go). None: the bot has no tools.
    click_refusal: Callable[[str, Turn], Awaitable[str]] | None = None
    # (pipeline, place, vote, previous, turn id): a 👍/👎 on the console's daily aggregates (and a 👎 on its
    # unanswered list), in the caller's pipeline.
    count_vote: Callable[[Any, Place, str, str | None, str], None] | None = None
    # Seals the credentials adapters keep in Redis (installations, response_urls, interaction tokens).
    box: CredentialBox = field(default_factory=lambda: CredentialBox(()))

    @classmethod
    def of(cls, rt: Runtime) -> EdgeDeps:
        return cls(
            bot=rt.bot,
            redis=rt.redis,
            keys=rt.keys,
            dispatcher=rt.dispatcher,
            commands=rt.engine.commands,
            resume=rt.engine.resume,
            redact=rt.safety.redactor.redact if rt.safety is not None else None,
            http=rt.ops.http,
            click_refusal=rt.tools.click_refusal if rt.tools is not None else None,
            count_vote=rt.stats.queue_vote if rt.stats is not None else None,
            box=rt.settings.credential_box(),
        )
