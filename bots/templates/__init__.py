"""Bot folder templates for ``parley new`` (minimal; support and arcade copy the shipped bots)."""
