"""The Slack adapter: ``build_adapter(runtime)`` and ``build_delivery(runtime)`` for ``parley run``,
``check(runtime)`` for ``parley check``, ``rotate_credentials(runtime)`` for ``parley rotate-credentials``.

Modules (one job each):

    settings   credentials from the environment, the bot's [slack] table, Socket Mode vs HTTP vs OAuth
    translate  pure: Slack payloads -> Turn / CommandCall / Feedback; feedback and section blocks
    route      pure: where a queued turn's reply goes (Route <-> SlackTarget)
    mrkdwn     pure: model Markdown -> safe Slack mrkdwn (escaping, no pings, no broadcasts)
    sink       post / edit one reply's messages (MessageSink for the shared StreamRenderer)
    streaming  native chat.startStream / appendStream / stopStream with fallback and handover
    reply      render one engine reply stream (native or post + update, feedback buttons)
    delivery   the Delivery port for queue workers: messages, slash commands, handoff and flag notices
    flags      pure: the moderators' notice for a flagged turn (plain text, mention-safe)
    users      display names from users.info, cached in Redis per workspace and user for a day
    oauth      Redis-backed async installation and OAuth state stores
    state      thread marks and feedback votes in Redis
    client     AsyncWebClient / webhook client with 429 and 5xx retries
    app        the bolt AsyncApp and its listeners: ack, translate, dispatch; HTTP routes or Socket Mode
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.slack.app import SlackAdapter
from adapters.slack.delivery import SlackDelivery
from adapters.slack.oauth import RedisInstallationStore
from adapters.slack.route import PLATFORM
from adapters.slack.settings import (
    SlackBotConfig,
    SlackSettings,
    choose_mode,
    load_slack_settings,
    parse_bot_config,
)
from core.errors import ParleyError

if TYPE_CHECKING:
    from core.runtime import Runtime

__all__ = ["SlackAdapter", "SlackDelivery", "build_adapter", "build_delivery", "check", "rotate_credentials"]


def _config(runtime: Runtime) -> SlackBotConfig:
    source = str(runtime.bot.folder / "bot.toml") + ": [slack]"
    return parse_bot_config(runtime.bot.platform_config("slack"), source)


def build_delivery(runtime: Runtime, settings: SlackSettings | None = None) -> SlackDelivery:
    """What queue workers show Slack replies through (any process: it needs only the Web API)."""
    settings = settings or load_slack_settings()
    choose_mode(settings)  # the same credentials rules as the adapter, same one-line errors
    return SlackDelivery(runtime, settings, _config(runtime))


def build_adapter(runtime: Runtime, settings: SlackSettings | None = None) -> SlackAdapter:
    """The Slack adapter for ``runtime``'s bot, configured from the environment and ``[slack]``.

    Registers the Slack Delivery on the runtime unless ``parley run`` already did.
    """
    settings = settings or load_slack_settings()
    mode = choose_mode(settings)
    if PLATFORM in runtime.ops.deliveries:
        delivery = runtime.ops.deliveries.get(PLATFORM)
        if not isinstance(delivery, SlackDelivery):
            raise TypeError(f"the {PLATFORM!r} Delivery is not a SlackDelivery: {delivery!r}")
    else:
        delivery = SlackDelivery(runtime, settings, _config(runtime))
        runtime.ops.deliveries.register(PLATFORM, delivery)
    return SlackAdapter(runtime, settings, delivery.config, mode, delivery)


async def rotate_credentials(runtime: Runtime) -> str:
    """Re-seal the stored OAuth installations under the newest credential key (response_urls live 30 min:
    they need nothing)."""
    settings = load_slack_settings()
    if not settings.slack_client_id:
        return "slack: no OAuth installations (single-workspace token): nothing to re-seal"
    store = RedisInstallationStore(
        runtime.redis,
        runtime.keys,
        client_id=settings.slack_client_id,
        box=runtime.settings.credential_box(),
    )
    return f"slack: {await store.reseal_all()} installation record(s) re-sealed"


async def check(runtime: Runtime) -> list[str]:
    """Problems with the Slack set-up, one line each (credentials present and accepted by Slack)."""
    try:
        settings = load_slack_settings()
        mode = choose_mode(settings)
        delivery = SlackDelivery(runtime, settings, _config(runtime))
        adapter = SlackAdapter(runtime, settings, delivery.config, mode, delivery)
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
