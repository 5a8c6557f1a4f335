"""Names vulture (``make lint``, min_confidence 60 in pyproject.toml) reports but that are used.

Vulture matches by name only, so one line covers every attribute of that name. A line is a name vulture must
treat as used; ``_`` stands for any object (this file is parsed, never run).
"""

# --- Called or read by libraries, not by our code ---
# pydantic / pydantic-settings: model configuration, validators (run by the decorator), the sources hook.
_.model_config
_._ids  # adapters/discord/settings.py
_._api_url  # adapters/discord/settings.py
_._shards  # adapters/discord/settings.py
_._display  # core/bot.py
_._scores  # core/bot.py
_._empty_is_unset  # core/settings.py, core/safety/settings.py
_._queue_timing  # core/settings.py
_.settings_customise_sources
_.settings_cls  # a parameter of settings_customise_sources that we do not need
# BotConfig's platform tables are read with getattr(config, platform) (core/bot.py).
_.slack
# discord.py: Client hooks and Intents flags.
_.setup_hook
_.before_identify_hook
_.on_ready
_.on_message
_.on_interaction
_.guild_messages
_.dm_messages
# slack_sdk: the AsyncWebClient method we override, and the InstallationStore / OAuthStateStore interface.
_.oauth_v2_access
_.logger
_.async_save
_.async_save_bot
_.async_find_installation
_.async_delete_bot
_.async_delete_installation
_.async_delete_all
_.async_issue
_.async_consume
# Only named in a string (cast("WebhookPayload", ...)) under TYPE_CHECKING: adapters/discord/delivery.py.
_.WebhookPayload

# --- Slack payload fields parsed but not read (they document the wire shape: adapters/slack/payloads.py) ---
_.channel_type
_.parent_user_id
_.event_ts
_.client_msg_id
_.api_app_id
_.event_time
_.authorizations
_.is_ext_shared_channel
_.trigger_id
_.block_id
_.action_ts
_.is_ephemeral
_.real_name
_.alt_txt  # SlackFile: read with .get() in adapters/slack/translate.py:image_refs
_.mimetype
_.url_private
_.url_private_download

# --- Read only by tests/ and the benchmarks ---
_.collect  # Engine.collect: tests/scale/test_breaker.py, tests/bench/core_bench.py
_.flag_notices  # SlackDelivery: tests/slack/test_flags.py
_.exact  # TokenCounter: tests/core/test_prompt.py
_.job_id  # Job: tests/scale/helpers.py
