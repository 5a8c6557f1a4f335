"""The whole turn with tools in the terminal: `parley chat --bot support` as a real process, the support
MCP server as its subprocess, create_ticket asked as y/n, then run (or not) on the answer."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from tests.core.test_cli import llm_env, parley
from tests.fakes.openai_server import Call, FakeOpenAI, Reply, ToolCalls

TICKET = {"subject": "Parcel never arrived", "details": "Order A1002 is late", "order_id": "A1002"}


def tickets(cwd: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(cwd / ".parley" / "support.db") as conn:
        return conn.execute("SELECT order_id, subject FROM tickets").fetchall()


async def test_terminal_yes_runs_the_call_and_no_does_not(fake_openai: FakeOpenAI, redis_url: str) -> None:
    cwd = Path(tempfile.mkdtemp(prefix="parley-tools-"))
    fake_openai.queue(
        ToolCalls([Call("order_status", {"order_id": "A1002"})]),  # read-only: runs at once
        ToolCalls([Call("create_ticket", TICKET)]),  # side effect: asked first
        Reply("Ticket created for you."),  # after "y"
        ToolCalls([Call("create_ticket", {**TICKET, "subject": "second"})]),
        Reply("Alright, no ticket."),  # after "n"
    )
    stdin = "where is A1002? open a ticket please\ny\nanother ticket\nn\n"
    code, out, err = await parley(
        "chat",
        "--bot",
        "support",
        "--jsonl",
        stdin=stdin,
        env=llm_env(fake_openai, redis_url),
        cwd=cwd,
        limit=90,
    )
    assert code == 0, err
    replies = [json.loads(line) for line in out.splitlines()]
    first, confirmed, second, cancelled = replies
    assert first["confirm"]["tool"] == "create_ticket"
    assert '"subject": "Parcel never arrived"' in first["reply"]  # the exact arguments are shown
    assert confirmed["reply"] == "Ticket created for you."
    assert second["confirm"]["id"] != first["confirm"]["id"]
    assert cancelled["reply"] == "Alright, no ticket."
    assert tickets(cwd) == [("A1002", "Parcel never arrived")]  # only the confirmed one
    # The model saw the order (read-only call) fenced as untrusted data, and that the user declined.
    bodies = [r.body for r in fake_openai.chat_requests]
    assert "tools" in bodies[0]
    assert "You have no tools" not in bodies[0]["messages"][0]["content"]
    assert any('<tool_result tool="order_status">' in m.get("content", "") for m in bodies[1]["messages"])
    assert 'outcome="cancelled"' in bodies[-1]["messages"][-1]["content"]
