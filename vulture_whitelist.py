"""Names vulture (``make lint``, min_confidence 60 in pyproject.toml) reports but that are used.

Vulture matches by name only, so one line covers every attribute of that name. A line is a name vulture must
treat as used; ``_`` stands for any object (this file is parsed, never run).
"""

# --- Called or read by libraries, not by our code ---
_.handle_async_request  # core/net/aio.py AioTransport: httpx calls it
# pydantic / pydantic-settings: model configuration, validators (run by the decorator), the sources hook.
_.model_config
_._ids  # adapters/discord/settings.py
_._api_url  # adapters/discord/settings.py
_._shards  # adapters/discord/settings.py
_._display  # core/bot.py
_._scores  # core/bot.py
_._empty_is_unset  # core/settings.py, core/safety/settings.py
_._fernet_keys  # core/settings.py (validates PARLEY_CREDENTIALS_KEYS)
_._networks  # core/settings.py (validates PARLEY_HTTP_TRUSTED_PROXIES)
_._plain_url  # adapters/slack/settings.py (validates SLACK_API_URL)
_.connection_made  # core/ops/http.py _Refuse: asyncio's Protocol callback
_._server  # core/ops/http.py _CappedSite: aiohttp's BaseSite.stop() closes the server it names
_._queue_timing  # core/settings.py
_._sentinel  # core/settings.py (validates REDIS_SENTINELS / REDIS_SENTINEL_MASTER)
_._long_enough  # core/console/settings.py
_._networks  # core/console/settings.py (PARLEY_CONSOLE_TRUSTED_PROXIES)
_.discord_token  # core/console/mount.py PlatformCredentials: read from the environment, shown masked
_._budgets  # core/kb/settings.py
# core/kb/minilm_ort.py: onnxruntime SessionOptions fields, read by the session it builds.
_.intra_op_num_threads
_.inter_op_num_threads
_.execution_mode
_.graph_optimization_level
_.log_severity_level
_.ir_version  # core/kb/minilm_ort.py: the ONNX model's IR version, read by onnxruntime
_.settings_customise_sources
_._one_transport  # core/tools/config.py
_._unique  # core/tools/config.py
_._one  # bots/convtest/cases.py
_._steps  # bots/convtest/cases.py
_.__getattr__  # core/plugin.py: a module's lazy attribute (TurnContext)
# sqlite3: how rows come back (bots/support/tools.py).
_.row_factory
# mcp: tools registered by the MCPServer.tool() decorator and called by MCP clients (bots/support/tools.py).
_.order_status
_.create_ticket
_.settings_cls  # a parameter of settings_customise_sources that we do not need
# bm25s reads it in get_scores_from_ids (core/kb/lexical.py sets it on a loaded index).
_.nonoccurrence_array
# BotConfig's platform tables are read with getattr(config, platform) (core/bot.py).
_.slack
# discord.py: Client hooks and Intents flags.
_.setup_hook
_.before_identify_hook
_.on_ready
_.on_message
_.on_interaction
_.on_raw_app_command_permissions_update
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
_.duration_ms  # SlackFile: read with .get() in adapters/slack/translate.py:audio_refs

# Read by the console's Jinja2 templates (core/console/templates), which vulture does not parse.
_.categories
_.thumbs_up_rate
_.resumed_by
_.waiting
_.created  # Account: the audit page's account list

# --- Read only by tests/ and the benchmarks ---
_.record_vote  # DailyStats: tests/console/test_stats.py (Slack votes ride on its own pipeline: queue_vote)
_.collect  # Engine.collect: tests/scale/test_breaker.py, tests/bench/core_bench.py
CollectingDelivery  # adapters/common/collect.py: the engine tests' delivery (tests/core)
_.flag_notices  # SlackDelivery: tests/slack/test_flags.py
_.exact  # TokenCounter: tests/core/test_prompt.py
_.job_id  # Job: tests/scale/helpers.py
_.is_context  # core/prompt.py: tests that read prompts as history skip the labelled context message
_.iban_ok  # core/safety/redact.py: the IBAN checksum, tested on its own (tests/safety/test_redact.py)
_.strip_think  # core/think.py: ThinkFilter for a whole stored text; tests/tools
_.connects  # MCPConnection: tests/tools/test_mcp.py watches reconnects
_.connected  # MCPConnection: tests/tools/test_mcp.py
_.refused_per_peer  # _CappedSite: tests/scale/test_http_per_peer.py
onnx_graph  # core/kb/minilm.py: `make onnx-graph` writes it to core/kb/minilm.onnx; tests/kb checks the file
_.data_location  # onnx TensorProto field set in core/kb/minilm_ort.py (read by onnxruntime)
_.next_health_check  # redis-py reads it: core/ops/redisconn.py _FreshIsHealthy sets when the next PING is due
