"""Confirm / cancel buttons for a proposed side-effecting tool call, and the click as a turn. Pure.

The question (with the exact arguments) is the reply's text; the buttons carry the pending call's id. A click
becomes a turn by the clicking user running ``/tool confirm <id>`` (or cancel) in the same thread: the core
checks that the clicker is the user the call was proposed to.
"""

from __future__ import annotations

from adapters.slack.payloads import BlockActions
from adapters.slack.places import place_of
from adapters.slack.settings import is_admin
from core.clicks import confirm_call
from core.types import Author, Turn

TOOL_CONFIRM = "parley_tool_confirm"
TOOL_CANCEL = "parley_tool_cancel"


def confirm_blocks(pending_id: str) -> list[dict[str, object]]:
    return [
        {
            "type": "actions",
            "block_id": "parley_tool_confirm",
            "elements": [
                {
                    "type": "button",
                    "action_id": TOOL_CONFIRM,
                    "style": "primary",
                    "text": {"type": "plain_text", "text": "Confirm"},
                    "value": pending_id,
                },
                {
                    "type": "button",
                    "action_id": TOOL_CANCEL,
                    "text": {"type": "plain_text", "text": "Cancel"},
                    "value": pending_id,
                },
            ],
        }
    ]


def answered_blocks(text: str, user: str, confirmed: bool) -> list[dict[str, object]]:
    """What replaces the buttons once clicked (so nobody clicks twice)."""
    verdict = f"✅ Confirmed by <@{user}>" if confirmed else f"✖️ Cancelled by <@{user}>"
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000] or " "}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": verdict}]},
    ]


def turn_from_tool_click(payload: BlockActions, admins: frozenset[str] = frozenset()) -> Turn | None:
    """A confirm / cancel click -> the turn that resumes the pending call, or ``None``."""
    actions = payload.get("actions") or []
    if not actions:
        return None
    action = actions[0]
    action_id = action.get("action_id", "")
    if action_id not in (TOOL_CONFIRM, TOOL_CANCEL):
        return None
    pending_id = str(action.get("value", ""))[:64]
    user = (payload.get("user") or {}).get("id", "")
    container = payload.get("container") or {}
    message = payload.get("message") or {}
    channel = container.get("channel_id") or (payload.get("channel") or {}).get("id", "")
    team = (payload.get("team") or {}).get("id", "") or (payload.get("user") or {}).get("team_id", "")
    # The reply sits in the conversation's thread (or is the top of a DM conversation).
    thread = str(message.get("thread_ts") or container.get("thread_ts") or "")
    if not (pending_id and user and channel):
        return None
    call = confirm_call(pending_id, action_id == TOOL_CONFIRM)
    # The clicker's admin rights, as for their messages: an admin-only tool can be confirmed by button.
    return Turn(
        author=Author(user, is_admin=is_admin(admins, team, user)),
        place=place_of(team, channel, thread),
        text=f"/{call.name} {call.args}",
        addressed=True,
        command=call,
    )
