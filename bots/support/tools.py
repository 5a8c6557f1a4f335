"""Example Co.'s order tools as an MCP server: ``python -m bots.support.tools`` (stdio) or
``python -m bots.support.tools --http --port 8931`` (streamable HTTP at /mcp). Any MCP client can use it.

- ``order_status`` (read-only): where an order is.
- ``create_ticket`` (side-effecting, so Parley asks the customer first): opens a support ticket.

The SQLite database (``PARLEY_SUPPORT_DB``, default ``.parley/support.db``) is built by ``make support-db``
from ``bots/support/seed.sql``; if it is missing, the server builds it the same way on start.
SQLite calls run in a worker thread: the server's event loop never blocks on the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

SEED = Path(__file__).resolve().parent / "seed.sql"
DEFAULT_DB = Path(".parley") / "support.db"


def db_path() -> Path:
    return Path(os.environ.get("PARLEY_SUPPORT_DB") or DEFAULT_DB)


def build_db(path: Path, seed: Path = SEED) -> Path:
    """Create (or top up) the database from the seed file. Idempotent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.executescript(seed.read_text(encoding="utf-8"))
    return path


def _order_status(path: Path, order_id: str) -> str:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM orders WHERE id = ?", (order_id.strip().upper(),)).fetchone()
    if row is None:
        return f"No order {order_id!r} found. Order numbers look like A1001."
    lines = [
        f"Order {row['id']}: {row['status']}",
        f"Items: {row['items']}",
        f"Placed on: {row['placed_on']}",
    ]
    if row["shipped_on"]:
        lines.append(f"Shipped on: {row['shipped_on']} with {row['carrier']} (tracking {row['tracking']})")
    return "\n".join(lines)


def _create_ticket(path: Path, subject: str, details: str, order_id: str | None, requested_by: str) -> str:
    with sqlite3.connect(path) as db:
        if order_id and db.execute("SELECT 1 FROM orders WHERE id = ?", (order_id,)).fetchone() is None:
            return f"No order {order_id!r} found; the ticket was not created."
        cur = db.execute(
            "INSERT INTO tickets (order_id, subject, details, requested_by) VALUES (?, ?, ?, ?)",
            (order_id or None, subject, details, requested_by),
        )
        ticket = cur.lastrowid
    return f"Ticket T-{ticket} created: {subject!r}. A colleague will answer within one working day."


def make_server(path: Path | None = None) -> MCPServer:
    db = path or db_path()
    if not db.exists():
        build_db(db)
    server = MCPServer(
        "example-co-orders",
        instructions="Order status and support tickets for Example Co.",
        log_level="WARNING",  # stderr is the bot's log when it runs us over stdio
    )

    @server.tool(
        description="Look up an Example Co. order by its number (e.g. A1001): status, items, tracking.",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
    )
    async def order_status(
        order_id: Annotated[str, Field(description="the order number, e.g. A1001")],
    ) -> str:
        return await asyncio.to_thread(_order_status, db, order_id)

    @server.tool(
        description="Open a support ticket for a colleague to handle (a refund, damage, a lost parcel ...).",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False),
    )
    async def create_ticket(
        subject: Annotated[str, Field(description="one line summary", max_length=200)],
        details: Annotated[
            str, Field(description="what happened and what the customer wants", max_length=4000)
        ],
        order_id: Annotated[str | None, Field(description="the order number, if there is one")] = None,
        requested_by: Annotated[str, Field(description="the customer's name", max_length=200)] = "",
    ) -> str:
        return await asyncio.to_thread(_create_ticket, db, subject, details, order_id, requested_by)

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description="Example Co. order tools (MCP server)")
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--db", type=Path, default=None, help="SQLite file (default: PARLEY_SUPPORT_DB)")
    parser.add_argument("--build-db", action="store_true", help="create the database from seed.sql and exit")
    args = parser.parse_args()
    if args.build_db:
        print(build_db(args.db or db_path()))
        return
    server = make_server(args.db)
    if args.http:
        server.run("streamable-http", host=args.host, port=args.port)
    else:
        server.run()


if __name__ == "__main__":
    main()
