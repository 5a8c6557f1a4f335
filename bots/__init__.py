"""The shipped bots (``support`` for Slack, ``arcade`` for Discord) and the ``parley`` CLI."""
