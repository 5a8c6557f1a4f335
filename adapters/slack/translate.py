"""Slack payloads -> core values, and back. Pure functions, unit-tested on recorded payloads (house rule 1).

What starts a turn:

- ``app_mention`` in a channel: answered in that message's thread (a new thread if it was top-level);
- a DM (``channel_type`` ``im``): answered in the DM, threaded when the user wrote in a thread;
- a message in a thread without a mention: an *unaddressed* turn; the adapter promotes it to addressed when
  the bot already takes part in that thread (``follow_threads``), else the engine may keep it as context;
- a top-level channel message that mentions the bot (the ``message.channels`` twin of an ``app_mention``).

Ignored: the bot's own messages, other bots (unless ``answer_bots``), edits, deletions and other subtypes,
top-level channel chatter.

The conversation is ``(team, channel, thread_ts)``. The turn's ``event_id`` is the *message* identity
``channel:ts``, not Slack's ``event_id``: it is the same on every retry and on every replica, and it is also
the same for the ``app_mention`` and ``message`` events Slack sends for one mention, so the engine's Redis
dedupe lets exactly one of them through.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from adapters.common.split import split_text
from adapters.slack.payloads import BlockActions, EventCallback, MessageEvent, SlackFile, SlashCommand
from adapters.slack.places import place_of
from adapters.slack.settings import is_admin
from core.clicks import vote_call
from core.types import AudioRef, Author, Choice, CommandCall, ImageRef, Place, Turn

# Message subtypes that still carry a person's words. Everything else (message_changed, message_deleted,
# channel_join, bot_message unless answer_bots, ...) is not a turn.
_USER_SUBTYPES = frozenset({"", "thread_broadcast", "file_share"})

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
_CHANNEL_REF = re.compile(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>")
_SPECIAL = re.compile(r"<!([a-z]+)(?:\^[^|>]*)?(?:\|([^>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto|tel):[^|>]+)(?:\|([^>]*))?>")
_PERMALINK_TS = re.compile(r"/archives/([CDG][A-Z0-9]+)/p(\d{10})(\d{6})")


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who "we" are in a workspace (from ``auth.test`` / the installation)."""

    user_id: str
    bot_id: str = ""


@dataclass(frozen=True, slots=True)
class EventOptions:
    answer_bots: bool = False  # take turns from other bots' messages
    follow_threads: bool = True  # thread replies without a mention may be turns
    admins: frozenset[str] = field(default_factory=frozenset)  # Slack user ids with admin commands


@dataclass(frozen=True, slots=True)
class Feedback:
    """A 👍/👎 click under an answer."""

    turn_id: str
    vote: str  # "up" | "down"
    user_id: str
    place: Place
    message_ts: str


FEEDBACK_UP = "parley_feedback_up"
FEEDBACK_DOWN = "parley_feedback_down"
HANDOFF_RESUME = "parley_handoff_resume"
STORY_VOTE = re.compile(r"^parley_story_vote_[1-3]$")  # a story choice's button; value: Choice.value


def workspace_of(body: EventCallback) -> str:
    """The installation's workspace: ``team_id``, else the first authorization's, else the enterprise."""
    team = body.get("team_id") or ""
    if not team:
        auths = body.get("authorizations") or []
        team = (auths[0].get("team_id") or "") if auths else ""
    return team or body.get("enterprise_id") or body.get("event", {}).get("team", "")


def message_key(channel: str, ts: str) -> str:
    return f"{channel}:{ts}"


def turn_from_event(body: EventCallback, me: BotIdentity, options: EventOptions | None = None) -> Turn | None:
    """An Events API envelope -> the turn it starts, or ``None`` when it is not one."""
    options = options or EventOptions()
    event: MessageEvent = body.get("event") or {}
    kind = event.get("type", "")
    if kind not in ("message", "app_mention"):
        return None
    subtype = event.get("subtype", "")
    from_bot = bool(event.get("bot_id")) or subtype == "bot_message"
    if subtype not in _USER_SUBTYPES and not (subtype == "bot_message" and options.answer_bots):
        return None
    user = event.get("user", "")
    if (me.user_id and user == me.user_id) or (me.bot_id and event.get("bot_id") == me.bot_id):
        return None  # our own message: never answer ourselves
    if from_bot and not options.answer_bots:
        return None
    author_id = user or event.get("bot_id", "")
    channel, ts = event.get("channel", ""), event.get("ts", "")
    if not (author_id and channel and ts):
        return None

    raw_text = event.get("text", "")
    mentioned = bool(me.user_id) and _mentions(raw_text, me.user_id)
    thread_ts = event.get("thread_ts", "")
    in_thread = bool(thread_ts) and thread_ts != ts
    if kind == "app_mention" or (mentioned and event.get("channel_type") != "im"):
        addressed, thread = True, thread_ts or ts
    elif event.get("channel_type") == "im":
        addressed, thread = True, thread_ts
    elif in_thread and options.follow_threads:
        addressed, thread = False, thread_ts
    else:
        return None

    return Turn(
        author=Author(
            id=author_id, is_bot=from_bot, is_admin=is_admin(options.admins, workspace_of(body), author_id)
        ),
        place=place_of(workspace_of(body), channel, thread, im=event.get("channel_type") == "im"),
        text=plain_text(raw_text, strip_user=me.user_id),
        message_id=ts,
        addressed=addressed,
        event_id=message_key(channel, ts),
        images=image_refs(event.get("files") or []),
        audio=audio_refs(event.get("files") or []),
    )


def _shared(files: list[SlackFile], kind: str) -> Iterator[tuple[SlackFile, str]]:
    """The files of one kind ("image", "audio") with their download URL (``url_private``: the worker
    downloads it with the bot token)."""
    for f in files:
        url = str(f.get("url_private_download") or f.get("url_private") or "")
        if url and str(f.get("mimetype", "")).startswith(f"{kind}/"):
            yield f, url


def image_refs(files: list[SlackFile]) -> tuple[ImageRef, ...]:
    """A message's image files."""
    return tuple(
        ImageRef(
            url=url,
            mime=str(f.get("mimetype", "")),
            size=int(f.get("size") or 0),
            name=str(f.get("name") or ""),
            caption=str(f.get("alt_txt") or f.get("title") or ""),
            id=str(f.get("id") or ""),
        )
        for f, url in _shared(files, "image")
    )


def audio_refs(files: list[SlackFile]) -> tuple[AudioRef, ...]:
    """A message's audio files: uploaded clips and clips recorded in Slack (transcribed by the worker)."""
    return tuple(
        AudioRef(
            url=url,
            mime=str(f.get("mimetype", "")),
            size=int(f.get("size") or 0),
            name=str(f.get("name") or ""),
            id=str(f.get("id") or ""),
            duration=int(f.get("duration_ms") or 0) / 1000,
            voice=f.get("subtype") == "slack_audio",
        )
        for f, url in _shared(files, "audio")
    )


def _mentions(text: str, user_id: str) -> bool:
    return any(m.group(1) == user_id for m in _MENTION.finditer(text))


def plain_text(text: str, *, strip_user: str = "") -> str:
    """Slack's wire text -> what a person sees: mentions as ``@name``, links as ``label (url)``, unescaped.

    ``strip_user``'s mentions (the bot's own) are removed, so the model sees the question, not the ping.
    """

    def mention(m: re.Match[str]) -> str:
        if strip_user and m.group(1) == strip_user:
            return ""
        return "@" + (m.group(2) or m.group(1))

    def special(m: re.Match[str]) -> str:
        return m.group(2) or "@" + m.group(1)

    def link(m: re.Match[str]) -> str:
        url, label = m.group(1), m.group(2)
        return f"{label} ({url})" if label and label != url else url

    text = _MENTION.sub(mention, text)
    text = _CHANNEL_REF.sub(lambda m: "#" + (m.group(2) or m.group(1)), text)
    text = _SPECIAL.sub(special, text)
    text = _LINK.sub(link, text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def turn_from_command(
    payload: SlashCommand,
    commands: Mapping[str, str],
    admins: frozenset[str] = frozenset(),
    thread_commands: frozenset[str] = frozenset(),
) -> Turn | None:
    """A slash command -> a command turn, or ``None`` for a command this bot does not map.

    ``commands`` maps the Slack command as configured in the app (``/support-help``) to the core command
    (``help``): apps share one namespace per workspace, so the Slack names are configurable.

    Slack cannot run slash commands inside a thread, so the commands in ``thread_commands`` (``resume``,
    ``reset``) may name a thread by its permalink: ``/resume https://acme.slack.com/archives/C1/p1…`` acts
    on that thread's conversation.
    """
    name = commands.get(payload.get("command", ""))
    channel, user = payload.get("channel_id", ""), payload.get("user_id", "")
    if not (name and channel and user):
        return None
    args = payload.get("text", "").strip()
    thread = ""
    if name in thread_commands and args:
        target = thread_from_permalink(args.split()[0])
        if target is not None:
            channel, thread = target
            args = " ".join(args.split()[1:])
    team = payload.get("team_id", "") or payload.get("enterprise_id", "")
    return Turn(
        author=Author(
            id=user, display_name=payload.get("user_name", ""), is_admin=is_admin(admins, team, user)
        ),
        place=place_of(team, channel, thread),
        text=f"/{name} {args}".strip(),
        addressed=True,
        event_id="cmd:" + (payload.get("trigger_id", "") or f"{channel}:{user}:{args}"),
        command=CommandCall(name=name, args=plain_text(args)),
    )


def foreign_link(payload: SlashCommand, turn: Turn) -> bool:
    """A command whose link names a conversation outside the channel it was run in, from a non-admin.

    Slack runs a slash command only where the caller is a member, so the command's own channel is one the
    caller is part of (and so is every thread in it); any other channel is refused: a member must not wipe
    or un-pause a private channel's thread, or make the bot post there, by pasting its link.
    """
    return turn.place.channel != payload.get("channel_id", "") and not turn.author.is_admin


def resume_target(value: str, team: str) -> Place | None:
    """The conversation a "Resume bot" button names (its value is ``channel:thread``)."""
    channel, _, thread = value.partition(":")
    if not channel or not re.fullmatch(r"[CDG][A-Z0-9]+", channel) or not re.fullmatch(r"[0-9.]*", thread):
        return None
    return place_of(team, channel, thread)


def feedback_from_action(payload: BlockActions) -> Feedback | None:
    """A 👍/👎 click -> :class:`Feedback`, or ``None`` for any other action."""
    actions = payload.get("actions") or []
    if not actions:
        return None
    action = actions[0]
    action_id = action.get("action_id", "")
    if action_id not in (FEEDBACK_UP, FEEDBACK_DOWN):
        return None
    container = payload.get("container") or {}
    message = payload.get("message") or {}
    channel = container.get("channel_id") or (payload.get("channel") or {}).get("id", "")
    message_ts = container.get("message_ts", "")
    thread = str(message.get("thread_ts") or container.get("thread_ts") or "")
    team = (payload.get("team") or {}).get("id", "") or (payload.get("user") or {}).get("team_id", "")
    turn_id = action.get("value", "")
    user = (payload.get("user") or {}).get("id", "")
    if not (turn_id and user and channel):
        return None
    return Feedback(
        turn_id=turn_id[:64],
        vote="up" if action_id == FEEDBACK_UP else "down",
        user_id=user,
        place=place_of(team, channel, thread),
        message_ts=message_ts,
    )


def story_blocks(choices: tuple[Choice, ...]) -> list[dict[str, object]]:
    """A story part's choices as buttons carrying the story, round and number; a click is a vote
    (:func:`vote_from_action`)."""
    buttons: list[dict[str, object]] = []
    for choice in choices:
        buttons.append(
            {
                "type": "button",
                "action_id": f"parley_story_vote_{choice.number}",
                "text": {"type": "plain_text", "text": f"{choice.number}. {choice.label}"[:75]},
                "value": choice.value,
            }
        )
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Vote for what happens next:*"}},
        {"type": "actions", "block_id": "parley_story", "elements": buttons},
    ]


def vote_from_action(payload: BlockActions) -> Turn | None:
    """A click on a story choice -> ``/story <n>`` for that story's round, in the story's conversation (an
    old button, or one without a story id, still becomes a turn: the core answers it privately)."""
    actions = payload.get("actions") or []
    user = (payload.get("user") or {}).get("id", "")
    container = payload.get("container") or {}
    channel = container.get("channel_id", "")
    if not actions or not user or not channel:
        return None
    value = str(actions[0].get("value", ""))
    choice = Choice.parse(value)
    if choice is None:
        n = value.rpartition(":")[2]
        if not n.isdigit():
            return None
        choice = Choice("0", 0, int(n[:1]))  # a button from before story ids: never the open round
    call = vote_call(choice)
    message = payload.get("message") or {}
    team = (payload.get("team") or {}).get("id", "")
    event = f"{channel}:{container.get('message_ts', '')}:{user}:{actions[0].get('action_ts', '')}"
    return Turn(
        author=Author(id=user),
        place=place_of(team, channel, str(message.get("thread_ts", "") or "")),
        text=f"/story {call.args}",
        message_id=str(container.get("message_ts", "")),
        event_id=event,
        command=call,
    )


def feedback_blocks(turn_id: str) -> list[dict[str, object]]:
    """The 👍/👎 actions block put under an answer."""
    return [
        {
            "type": "actions",
            "block_id": "parley_feedback",
            "elements": [
                {
                    "type": "button",
                    "action_id": FEEDBACK_UP,
                    "text": {"type": "plain_text", "text": "👍", "emoji": True},
                    "value": turn_id,
                },
                {
                    "type": "button",
                    "action_id": FEEDBACK_DOWN,
                    "text": {"type": "plain_text", "text": "👎", "emoji": True},
                    "value": turn_id,
                },
            ],
        }
    ]


def section_blocks(mrkdwn: str, limit: int = 3000) -> list[dict[str, object]]:
    """Already-formatted mrkdwn as section blocks of at most ``limit`` chars each (fences kept balanced)."""
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": part}}
        for part in split_text(mrkdwn, limit)
        if part.strip()
    ]


def thread_from_permalink(link: str) -> tuple[str, str] | None:
    """A message permalink -> ``(channel, thread_ts)``: the thread a ``/resume <link>`` points at."""
    link = link.strip().strip("<>").split("|")[0]
    parts = urlsplit(link)
    match = _PERMALINK_TS.search(parts.path)
    if not match:
        return None
    channel, ts = match.group(1), f"{match.group(2)}.{match.group(3)}"
    thread = parse_qs(parts.query).get("thread_ts", [ts])[0]
    return channel, thread
