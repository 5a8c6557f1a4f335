"""Helpers shared by every adapter: message splitting and paced streaming of replies."""
