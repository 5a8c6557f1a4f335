"""The terminal adapter: chat with any bot through the full engine."""
