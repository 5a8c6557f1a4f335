"""Tools: Python function tools and MCP servers, one registry, a bounded calling loop, confirmation of side
effects by the asking user, and an audit of every call.

    config.py    [tools] in bot.toml (allow-lists, limits, MCP servers)
    spec.py      ToolSpec, ToolContext, the Tool protocol
    function.py  Python functions -> tools (JSON Schema from type hints or a pydantic model)
    mcp.py       MCP servers (stdio / streamable HTTP): owned connection task, reconnects
    registry.py  one registry; per-bot and per-channel allow-lists, admin-only tools
    loop.py      the loop that replaces a turn's single LLM call; ToolConfirm ends a turn for a click
    pending.py   side-effecting calls waiting for their user's click (Redis, TTL)
    fence.py     results: capped, redacted, fenced as untrusted
    audit.py     every call -> safety event stream, log, Prometheus
    setup.py     open_tools(): the bundle a runtime owns, and the /tool confirm|cancel command
"""
