"""The Slack platform package (:class:`~adapters.common.platform.PlatformModule`): ``load_settings``,
``link_for``, ``build_delivery`` and ``build_adapter`` for ``parley run``, ``check`` for ``parley check``,
``rotate_credentials`` for ``parley rotate-credentials``.

Modules (one job each):

    places     pure: Slack ids -> Place (DMs are direct) and link_for(place), the link that opens it
    settings   SLACK_* credentials, the bot's [slack] table (env over it), Socket Mode vs HTTP vs OAuth
    translate  pure: Slack payloads -> Turn / CommandCall / Feedback; feedback and section blocks
    route      pure: where a queued turn's reply goes (Route <-> SlackTarget)
    mrkdwn     pure: model Markdown -> safe Slack mrkdwn (escaping, no pings, no broadcasts)
    sink       post / edit one reply's messages (MessageSink for the shared StreamRenderer)
    streaming  native chat.startStream / appendStream / stopStream with fallback and handover
    reply      render_reply: one engine reply stream (native or post + update, feedback buttons)
    delivery   the Delivery port for queue workers: messages, slash commands, handoff and flag notices
    flags      pure: the moderators' notice for a flagged turn (plain text, mention-safe)
    users      display names from users.info, cached in Redis per workspace and user for a day
    oauth      Redis-backed async installation and OAuth state stores
    state      thread marks and feedback votes in Redis
    client     AsyncWebClient / webhook client with 429 and 5xx retries
    app        the bolt AsyncApp and its listeners: ack, translate, dispatch; HTTP routes or Socket Mode
"""

from __future__ import annotations

import redis.asyncio as aioredis

from adapters.common.deps import EdgeDeps
from adapters.slack.app import SlackAdapter
from adapters.slack.delivery import SlackDelivery
from adapters.slack.oauth import RedisInstallationStore
from adapters.slack.places import link_for
from adapters.slack.settings import (
    SlackSettings,
    SlackSetup,
    choose_mode,
    load_slack_settings,
    parse_bot_config,
    with_environment,
)
from core.bot import BotSpec
from core.credentials import CredentialBox
from core.errors import ParleyError
from core.keys import KeySpace

__all__ = [
    "SlackAdapter",
    "SlackDelivery",
    "build_adapter",
    "build_delivery",
    "check",
    "link_for",
    "load_settings",
    "rotate_credentials",
]


def load_settings(bot: BotSpec) -> SlackSetup:
    """SLACK_* from the environment and ``bot``'s ``[slack]`` table, the environment winning where both set
    a value (the moderators' and handoff channels)."""
    settings = load_slack_settings()
    config = parse_bot_config(bot.platform_config("slack"), f"{bot.folder / 'bot.toml'}: [slack]")
    return SlackSetup(settings, with_environment(config, settings))


def build_delivery(deps: EdgeDeps, setup: SlackSetup) -> SlackDelivery:
    """What queue workers show Slack replies through (any process: it needs only the Web API)."""
    choose_mode(setup.settings)  # the same credentials rules as the adapter, same one-line errors
    return SlackDelivery(deps, setup.settings, setup.config)


def build_adapter(deps: EdgeDeps, setup: SlackSetup, delivery: SlackDelivery) -> SlackAdapter:
    """The event side; it shares ``delivery``'s Redis stores (thread marks, names, installations)."""
    return SlackAdapter(deps, setup.settings, setup.config, choose_mode(setup.settings), delivery)


async def rotate_credentials(
    redis: aioredis.Redis, keys: KeySpace, box: CredentialBox, settings: SlackSettings
) -> str:
    """Re-seal the stored OAuth installations under the newest credential key (response_urls live 30 min:
    they need nothing)."""
    if not settings.slack_client_id:
        return "slack: no OAuth installations (single-workspace token): nothing to re-seal"
    store = RedisInstallationStore(redis, keys, client_id=settings.slack_client_id, box=box)
    return f"slack: {await store.reseal_all()} installation record(s) re-sealed"


async def check(deps: EdgeDeps, setup: SlackSetup) -> list[str]:
    """Problems with the Slack set-up, one line each (credentials present and accepted by Slack)."""
    try:
        mode = choose_mode(setup.settings)
        delivery = SlackDelivery(deps, setup.settings, setup.config)
        adapter = SlackAdapter(deps, setup.settings, setup.config, mode, delivery)
    except ParleyError as exc:
        return [f"slack: {exc}"]
    try:
        await adapter.verify()
    except ParleyError as exc:
        return [f"slack: {exc}"]
    finally:
        await adapter.aclose()
    print(f"slack: ok ({mode.value} mode)")  # `parley check` reports on stdout
    return []
