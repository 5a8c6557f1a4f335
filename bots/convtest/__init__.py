"""Conversation tests for bots: ``parley test`` (cases, scripted model, checks, runner)."""
