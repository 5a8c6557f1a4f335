"""Confirmation on Slack: the support bot through the real Slack adapter (bolt) and the fake Slack Web API,
the orders MCP server as a real subprocess, create_ticket run only on the asking customer's click."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

from adapters.slack.confirm import TOOL_CANCEL, TOOL_CONFIRM
from bots.support.tools import build_db
from core.bot import BotSpec
from tests.conftest import RuntimeFactory
from tests.fakes.openai_server import Call, FakeOpenAI, Reply, ToolCalls
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.slack.conftest import RUNTIME, StartSlack, support_spec

# The Slack harness's fixtures (re-exported names are how pytest finds them here).
from tests.slack.conftest import slack as slack
from tests.slack.conftest import start_slack as start_slack

ROOT = "1700000300.000100"
TICKET = {"subject": "Lost parcel", "details": "A1001 never arrived", "order_id": "A1001"}


def spec_with_db(db: Path) -> BotSpec:
    spec = support_spec()
    tools = spec.config.tools
    (server,) = tools.mcp
    server = server.model_copy(update={"args": [*server.args, "--db", str(db)]})
    config = spec.config.model_copy(update={"tools": tools.model_copy(update={"mcp": [server]})})
    return dataclasses.replace(spec, config=config)


def tickets(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT order_id, subject FROM tickets").fetchall()


def buttons(message: Any) -> list[dict[str, Any]]:
    return [e for b in message.blocks if b.get("type") == "actions" for e in b["elements"]]


async def test_slack_buttons_confirm_only_for_the_asker(
    runtime_factory: RuntimeFactory,
    start_slack: StartSlack,
    slack: FakeSlack,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:
    db = build_db(tmp_path / "support.db")
    async with runtime_factory(spec=spec_with_db(db), parley_mcp=True, parley_queue=False, **RUNTIME) as rt:
        assert rt.tools is not None
        app = await start_slack(runtime=rt)
        fake_openai.queue(ToolCalls([Call("create_ticket", TICKET)]))
        await app.sender.event(rq.app_mention("A1001 never came, open a ticket", ts=ROOT, user="U0CUST"))
        await app.settle()
        (question,) = slack.bot_messages("C0GENERAL", ROOT)
        assert '"subject": "Lost parcel"' in question.shown
        confirm, cancel = buttons(question)
        assert (confirm["action_id"], cancel["action_id"]) == (TOOL_CONFIRM, TOOL_CANCEL)
        pending = confirm["value"]
        assert tickets(db) == []

        def click(user: str, action: str = TOOL_CONFIRM, rid: str = "") -> dict[str, Any]:
            return rq.block_action(
                action,
                pending,
                user=user,
                channel="C0GENERAL",
                message_ts=question.ts,
                thread_ts=ROOT,
                response_url=slack.response_url(rid or user),
            )

        # Someone else in the channel clicks Confirm: nothing runs, the buttons stay for the customer, and
        # only the clicker is told why (ephemeral, through the click's response_url), once.
        assert (await app.sender.action(click("U0NOSY"))).status == 200
        await app.settle()
        assert tickets(db) == []
        assert len(slack.bot_messages("C0GENERAL", ROOT)) == 1  # nothing posted in the thread
        (told,) = [body for rid, body in slack.responses if rid == "U0NOSY"]
        assert told["response_type"] == "ephemeral" and "Only the person who asked" in told["text"]
        assert buttons(question)

        fake_openai.queue(Reply("Done: your ticket is open; a colleague will answer within a day."))
        assert (await app.sender.action(click("U0CUST"))).status == 200
        await app.settle()
        assert tickets(db) == [("A1001", "Lost parcel")]
        assert slack.bot_messages("C0GENERAL", ROOT)[-1].shown.startswith("Done: your ticket is open")
        assert not buttons(question)  # answered: the buttons are gone
        assert "Confirmed by <@U0CUST>" in str(question.blocks)

        # A second click (a retry, a double click) runs nothing again, and is told so privately.
        shown = len(slack.bot_messages("C0GENERAL", ROOT))
        await app.sender.action(click("U0CUST", rid="again"))
        await app.settle()
        assert len(tickets(db)) == 1
        assert len(slack.bot_messages("C0GENERAL", ROOT)) == shown
        (again,) = [body for rid, body in slack.responses if rid == "again"]
        assert again["response_type"] == "ephemeral" and "already answered" in again["text"]

        audit = await rt.safety.events.recent(platform="slack", workspace="T0001", count=20)
        outcomes = [(e["category"], e["action"], e["user"]) for e in audit if e["stage"] == "tool"]
        assert ("create_ticket", "pending", "U0CUST") in outcomes
        assert ("create_ticket", "ok", "U0CUST") in outcomes
        assert any(e["action"] == "confirm_not_yours" and e["user"] == "U0NOSY" for e in audit)
        # The double click is audited as such, naming the tool (issue 20), not as an expired request.
        assert ("create_ticket", "confirm_already_handled", "U0CUST") in outcomes
        app.stop.set()
        await app.serving
