"""Outbound network access: the fetch guard (guard.py) that every fetch for a document or a message uses."""
