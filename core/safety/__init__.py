"""Safety: layered moderation, personal-data redaction, prompt-injection hygiene, abuse and cost limits.

    turn -> access lists + blocked users -> rate limits (user, channel) -> token quotas (user, workspace)
         -> concurrent generations (workspace)                      [gate.py: one Redis round trip]
         -> moderation chain on the input: local rules, then the moderation endpoint  [chain.py]
         -> LLM (the canary in the system prompt; user text marked untrusted)
         -> moderation chain on the output as it grows, and on the final text
         -> memory, with personal data redacted                       [redact.py]
         -> usage counted into the quotas, the generation slot freed  [gate.py observer]

Every moderation decision is recorded (a bounded Redis stream and a structured log line: who, where,
category, action, turn id; never the text). The pieces are composed by :func:`core.safety.setup.open_safety`
from the bot's ``[moderation]``, ``[limits]``, ``[access]`` and ``[privacy]`` tables.

This module imports nothing on purpose, so that ``core.bot`` may import the leaf modules without a cycle.
"""
