"""The Slack adapter: ``build_adapter(runtime)`` for ``parley run``, ``check(runtime)`` for ``parley check``.

Modules (one job each):

    settings   credentials from the environment, the bot's [slack] table, Socket Mode vs HTTP vs OAuth
    translate  pure: Slack payloads -> Turn / CommandCall / Feedback; feedback and section blocks
    mrkdwn     pure: model Markdown -> safe Slack mrkdwn (escaping, no pings, no broadcasts)
    sink       post / edit one reply's messages (MessageSink for the shared StreamRenderer)
    streaming  native chat.startStream / appendStream / stopStream with fallback and handover
    reply      deliver one engine reply stream (native or post + update, feedback buttons)
    oauth      Redis-backed async installation and OAuth state stores
    state      thread marks and feedback votes in Redis
    client     AsyncWebClient / webhook client with 429 and 5xx retries
    app        the bolt AsyncApp, listeners, owned work, HTTP server or Socket Mode
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.slack.app import SlackAdapter
from adapters.slack.settings import choose_mode, load_slack_settings, parse_bot_config
from core.errors import ParleyError

if TYPE_CHECKING:
    from core.runtime import Runtime

__all__ = ["SlackAdapter", "build_adapter", "check"]


def build_adapter(runtime: Runtime, **overrides: object) -> SlackAdapter:
    """The Slack adapter for ``runtime``'s bot, configured from the environment and ``[slack]``.

    ``overrides`` replace environment settings (tests pass ``slack_api_url=...`` and the like).
    """
    settings = load_slack_settings(**overrides)
    mode = choose_mode(settings)
    config = parse_bot_config(
        runtime.bot.platform_config("slack"), str(runtime.bot.folder / "bot.toml") + ": [slack]"
    )
    return SlackAdapter(runtime, settings, config, mode)


async def check(runtime: Runtime) -> list[str]:
    """Problems with the Slack set-up, one line each (credentials present and accepted by Slack)."""
    try:
        adapter = build_adapter(runtime)
    except ParleyError as exc:
        return [f"slack: {exc}"]
    try:
        await adapter.verify()
    except ParleyError as exc:
        return [f"slack: {exc}"]
    finally:
        await adapter.aclose()
    print(f"slack: ok ({adapter.mode.value} mode)")  # `parley check` reports on stdout
    return []
