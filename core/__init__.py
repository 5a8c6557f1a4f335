"""Parley's platform-agnostic core: turns in, reply streams out.

Nothing in this package may import Slack or Discord code.
"""
