"""Platform adapters: translate platform events into core turns and reply streams into platform calls."""
