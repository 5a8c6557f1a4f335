"""The operator console: a password-protected web page on the ops server for the people who run a bot.

settings  PARLEY_CONSOLE_* settings and the per-model price table
stats     daily aggregates in Redis (queued on a turn's final write, or recorded on their own)
auth      password, sessions, CSRF tokens, login limit
reads     bounded reads of conversations, transcripts, moderation events, blocked users
app       the aiohttp pages (Jinja2 templates, vendored Chart.js) and the actions
mount     building it from a runtime and serving it under /console
"""
