"""Slack -> app traffic: recorded-style payloads and a client that POSTs them signed, over real HTTP.

``SlackSender(base_url, signing_secret)`` signs like Slack (``v0=HMAC_SHA256(secret, "v0:{ts}:{body}")``) and
can forge: a tampered signature, a timestamp from the past, retry headers (``X-Slack-Retry-Num``).
Payload builders return dicts shaped like Slack's (trimmed to what matters, with realistic extras).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

_counter = itertools.count(1)


def new_ts() -> str:
    """A fresh message ts (unique within the test run)."""
    return f"{int(time.time())}.{next(_counter):06d}"


def sign(secret: str, timestamp: str, body: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- payload builders


def event_callback(
    event: dict[str, Any],
    *,
    team: str = "T0001",
    app: str = "A0001",
    bot_user: str = "UBOT",
    event_id: str = "",
) -> dict[str, Any]:
    return {
        "token": "legacy-verification-token",
        "team_id": team,
        "context_team_id": team,
        "api_app_id": app,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(),
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team,
                "user_id": bot_user,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": "4-" + uuid.uuid4().hex,
    }


def app_mention(
    text: str,
    *,
    user: str = "U0USER",
    channel: str = "C0GENERAL",
    ts: str = "",
    thread_ts: str = "",
    team: str = "T0001",
    bot_user: str = "UBOT",
) -> dict[str, Any]:
    ts = ts or new_ts()
    event: dict[str, Any] = {
        "client_msg_id": str(uuid.uuid4()),
        "type": "app_mention",
        "text": f"<@{bot_user}> {text}",
        "user": user,
        "ts": ts,
        "team": team,
        "blocks": [],
        "channel": channel,
        "event_ts": ts,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event_callback(event, team=team, bot_user=bot_user)


def message(
    text: str,
    *,
    user: str = "U0USER",
    channel: str = "C0GENERAL",
    channel_type: str = "channel",
    ts: str = "",
    thread_ts: str = "",
    team: str = "T0001",
    subtype: str = "",
    bot_id: str = "",
    parent_user_id: str = "",
    bot_user: str = "UBOT",
) -> dict[str, Any]:
    ts = ts or new_ts()
    event: dict[str, Any] = {
        "type": "message",
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "channel_type": channel_type,
        "team": team,
    }
    if user:
        event["user"] = user
        event["client_msg_id"] = str(uuid.uuid4())
    if thread_ts:
        event["thread_ts"] = thread_ts
        event["parent_user_id"] = parent_user_id or user
    if subtype:
        event["subtype"] = subtype
    if bot_id:
        event["bot_id"] = bot_id
        event["app_id"] = "A" + bot_id[1:]
    return event_callback(event, team=team, bot_user=bot_user)


def dm(text: str, *, user: str = "U0USER", channel: str = "D0DM", **kw: Any) -> dict[str, Any]:
    return message(text, user=user, channel=channel, channel_type="im", **kw)


def assistant_thread_started(
    *, user: str = "U0USER", channel: str = "D0DM", thread_ts: str = "", team: str = "T0001"
) -> dict[str, Any]:
    thread_ts = thread_ts or new_ts()
    event = {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": user,
            "context": {"channel_id": "C0GENERAL", "team_id": team, "enterprise_id": None},
            "channel_id": channel,
            "thread_ts": thread_ts,
        },
        "event_ts": new_ts(),
    }
    return event_callback(event, team=team)


def slash_command(
    command: str,
    text: str = "",
    *,
    user: str = "U0USER",
    channel: str = "C0GENERAL",
    team: str = "T0001",
    response_url: str = "https://hooks.slack.com/commands/T0001/1/x",
) -> dict[str, str]:
    return {
        "token": "legacy-verification-token",
        "team_id": team,
        "team_domain": "acme",
        "channel_id": channel,
        "channel_name": "general",
        "user_id": user,
        "user_name": "ada",
        "command": command,
        "text": text,
        "api_app_id": "A0001",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": f"{next(_counter)}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex[:8]}",
    }


def block_action(
    action_id: str,
    value: str,
    *,
    user: str = "U0USER",
    channel: str = "C0GENERAL",
    message_ts: str = "",
    thread_ts: str = "",
    team: str = "T0001",
    response_url: str = "https://hooks.slack.com/actions/T0001/1/x",
) -> dict[str, Any]:
    message_ts = message_ts or new_ts()
    msg: dict[str, Any] = {"type": "message", "ts": message_ts, "bot_id": "BBOT", "text": "answer"}
    if thread_ts:
        msg["thread_ts"] = thread_ts
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "ada", "name": "ada", "team_id": team},
        "api_app_id": "A0001",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": f"{next(_counter)}.{uuid.uuid4().int % 10**12}",
        "team": {"id": team, "domain": "acme"},
        "channel": {"id": channel, "name": "general"},
        "message": msg,
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "parley_feedback",
                "text": {"type": "plain_text", "text": "x"},
                "value": value,
                "type": "button",
                "action_ts": new_ts(),
            }
        ],
    }


# ---------------------------------------------------------------- signed HTTP


@dataclass
class Sent:
    status: int
    body: str
    headers: dict[str, str]
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class SlackSender:
    """POST signed Slack requests to a running app's ``/slack/events``."""

    def __init__(self, url: str, signing_secret: str) -> None:
        self.url = url
        self.secret = signing_secret
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SlackSender:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def post_raw(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: float | None = None,
        tamper: bool = False,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Sent:
        assert self._session is not None, "use `async with SlackSender(...)`"
        ts = str(int(timestamp if timestamp is not None else time.time()))
        sig = signature if signature is not None else sign(self.secret, ts, body)
        if tamper:
            sig = sig[:-4] + ("0000" if not sig.endswith("0000") else "1111")
        all_headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sig,
            **(headers or {}),
        }
        started = time.monotonic()
        async with self._session.post(self.url, data=body.encode(), headers=all_headers) as resp:
            text = await resp.text()
            return Sent(resp.status, text, dict(resp.headers), time.monotonic() - started)

    async def event(self, payload: dict[str, Any], *, retry_num: int | None = None, **kw: Any) -> Sent:
        headers = dict(kw.pop("headers", None) or {})
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return await self.post_raw(json.dumps(payload), "application/json", headers=headers, **kw)

    async def command(self, form: dict[str, str], **kw: Any) -> Sent:
        return await self.post_raw(urlencode(form), "application/x-www-form-urlencoded", **kw)

    async def action(self, payload: dict[str, Any], **kw: Any) -> Sent:
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post_raw(body, "application/x-www-form-urlencoded", **kw)
