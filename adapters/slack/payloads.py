"""Raw Slack payloads as TypedDicts: the shapes we read at the edge (house rule 3).

Only the fields Parley reads are declared; Slack sends many more. Everything is ``total=False`` because
Slack omits fields freely (``thread_ts`` outside threads, ``user`` on bot messages, ...).
"""

from __future__ import annotations

from typing import TypedDict


class Authorization(TypedDict, total=False):
    enterprise_id: str | None
    team_id: str | None
    user_id: str
    is_bot: bool


class SlackFile(TypedDict, total=False):
    """A file object in a message event (``files``)."""

    id: str
    name: str
    title: str
    alt_txt: str
    mimetype: str
    size: int
    url_private: str
    url_private_download: str
    duration_ms: int  # audio and video clips recorded in Slack
    subtype: str  # "slack_audio" for a clip recorded in Slack


class MessageEvent(TypedDict, total=False):
    """``message`` (all channel types) and ``app_mention`` events."""

    type: str
    subtype: str
    channel: str
    channel_type: str  # "im" | "mpim" | "channel" | "group" (absent on app_mention)
    user: str
    bot_id: str
    app_id: str
    text: str
    ts: str
    thread_ts: str
    parent_user_id: str
    team: str
    event_ts: str
    client_msg_id: str
    files: list[SlackFile]  # file_share messages (and mentions with attachments)


class EventCallback(TypedDict, total=False):
    """The Events API envelope (HTTP body, or a Socket Mode ``events_api`` payload)."""

    type: str  # "event_callback"
    team_id: str
    enterprise_id: str
    api_app_id: str
    event_id: str
    event_time: int
    event: MessageEvent
    authorizations: list[Authorization]
    is_ext_shared_channel: bool


class SlashCommand(TypedDict, total=False):
    """A slash command's form fields."""

    command: str
    text: str
    team_id: str
    enterprise_id: str
    channel_id: str
    channel_name: str
    user_id: str
    user_name: str
    response_url: str
    trigger_id: str
    api_app_id: str


class ActionUser(TypedDict, total=False):
    id: str
    username: str
    name: str
    team_id: str


class Action(TypedDict, total=False):
    action_id: str
    block_id: str
    value: str
    type: str
    action_ts: str


class ActionContainer(TypedDict, total=False):
    type: str
    message_ts: str
    thread_ts: str
    channel_id: str
    is_ephemeral: bool


class BlockActions(TypedDict, total=False):
    """An interactivity payload of type ``block_actions`` (a button click)."""

    type: str
    user: ActionUser
    team: dict[str, str]
    channel: dict[str, str]
    container: ActionContainer
    message: dict[str, object]
    actions: list[Action]
    response_url: str
    trigger_id: str


class UserProfile(TypedDict, total=False):
    display_name: str
    real_name: str


class User(TypedDict, total=False):
    """The ``user`` object of a ``users.info`` response."""

    id: str
    name: str  # the legacy username
    real_name: str
    deleted: bool
    is_bot: bool
    profile: UserProfile
