"""Discord events -> :class:`~core.types.Turn`, as small pure functions (house rule 1).

discord.py hands us rich objects tied to its connection state; :func:`message_view` and
:func:`interaction_view` copy the few facts we use into frozen views, and the pure functions decide on the
views alone, so every rule can be unit-tested on recorded payloads without a connection.

What starts a turn (:func:`turn_from_message`):

- a DM; a mention of the bot (user mention, or its managed role); a reply to one of the bot's messages;
- any message in a thread the bot owns or is configured to follow;
- any message in a listened channel (opt-in, needs the message-content intent), as an *unaddressed* turn.

The bot's own messages are always ignored; other bots and webhooks too unless configured otherwise.
The conversation is ``(guild, channel, thread)``; DMs are per user (the DM channel), under workspace ``@me``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import discord

from core.types import AudioRef, Author, Choice, CommandCall, ImageRef, Place, Turn

PLATFORM = "discord"
STORY_BUTTON = "parley_story:"  # custom_id of a story choice's button: parley_story:<Choice.value>
DM_WORKSPACE = "@me"  # what Discord itself calls the DM "guild" in its URLs

_NO_NAMES: Mapping[str, str] = MappingProxyType({})
_CHAT_TYPES = (discord.MessageType.default, discord.MessageType.reply)


@dataclass(frozen=True, slots=True)
class MessageView:
    """The facts of a Discord message that decide whether and how it becomes a turn."""

    id: str
    channel_id: str
    guild_id: str | None  # None in DMs
    author_id: str
    author_name: str
    content: str
    author_is_bot: bool = False
    author_is_admin: bool = False  # Manage Server in this guild
    is_webhook: bool = False
    is_chat: bool = True  # a default message or a reply (not a join, pin, thread-created notice...)
    mentions_bot: bool = False  # the bot user or its managed role is mentioned
    reply_to_author_id: str | None = None  # author of the message this one replies to, when known
    thread_parent_id: str | None = None  # set when the channel is a thread
    thread_owner_id: str | None = None
    bot_role_ids: frozenset[str] = frozenset()  # the bot's managed role in this guild, if any
    user_names: Mapping[str, str] = field(default_factory=lambda: _NO_NAMES)  # mentioned user id -> name
    role_names: Mapping[str, str] = field(default_factory=lambda: _NO_NAMES)
    channel_names: Mapping[str, str] = field(default_factory=lambda: _NO_NAMES)
    images: tuple[ImageRef, ...] = ()  # image attachments (content type image/*)
    audio: tuple[AudioRef, ...] = ()  # voice messages and audio attachments (content type audio/*)


@dataclass(frozen=True, slots=True)
class MessagePolicy:
    """Per-bot rules for which messages start a turn."""

    bot_id: str
    bot_role_ids: frozenset[str] = frozenset()  # the bot's managed role(s); see MessageView.bot_role_ids
    ignore_bots: bool = True
    allowed_bots: frozenset[str] = frozenset()  # bot ids answered even when ignore_bots is on
    follow_threads: frozenset[str] = frozenset()  # thread ids, or parent channel ids whose threads we follow
    listen_channels: frozenset[str] = frozenset()  # every message there is a turn (needs message content)


@dataclass(frozen=True, slots=True)
class InteractionView:
    """The facts of a slash-command interaction."""

    id: str
    command: str
    options: tuple[tuple[str, str], ...]
    user_id: str
    user_name: str
    channel_id: str
    guild_id: str | None
    user_is_bot: bool = False
    user_is_admin: bool = False
    thread_parent_id: str | None = None


# ---------------------------------------------------------------------------------------------- pure rules


def place_for(guild_id: str | None, channel_id: str, thread_parent_id: str | None) -> Place:
    """The conversation: ``(guild, channel, thread)``; a thread lives under its parent channel."""
    if guild_id is None:
        return Place(PLATFORM, DM_WORKSPACE, channel_id, is_direct=True)
    if thread_parent_id is not None:
        return Place(PLATFORM, guild_id, thread_parent_id, channel_id)
    return Place(PLATFORM, guild_id, channel_id)


def clean_text(
    content: str,
    *,
    bot_id: str,
    bot_role_ids: frozenset[str] = frozenset(),
    user_names: Mapping[str, str] = _NO_NAMES,
    role_names: Mapping[str, str] = _NO_NAMES,
    channel_names: Mapping[str, str] = _NO_NAMES,
) -> str:
    """Drop the bot's own mention; turn other mentions into readable ``@name`` / ``#channel`` text."""

    def user(m: re.Match[str]) -> str:
        uid = m.group(1)
        return "" if uid == bot_id else f"@{user_names.get(uid, 'someone')}"

    def role(m: re.Match[str]) -> str:
        rid = m.group(1)
        return "" if rid in bot_role_ids else f"@{role_names.get(rid, 'role')}"

    def channel(m: re.Match[str]) -> str:
        return f"#{channel_names.get(m.group(1), 'channel')}"

    text = re.sub(r"<@!?(\d+)>", user, content)
    text = re.sub(r"<@&(\d+)>", role, text)
    text = re.sub(r"<#(\d+)>", channel, text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    return text.strip()


def _is_followed_thread(view: MessageView, policy: MessagePolicy) -> bool:
    if view.thread_parent_id is None:
        return False
    return (
        view.thread_owner_id == policy.bot_id
        or view.channel_id in policy.follow_threads
        or view.thread_parent_id in policy.follow_threads
    )


def turn_from_message(view: MessageView, policy: MessagePolicy) -> Turn | None:
    """A turn for this message, or None when the bot should not react to it."""
    if view.author_id == policy.bot_id or not view.is_chat:
        return None
    if (
        (view.author_is_bot or view.is_webhook)
        and policy.ignore_bots
        and view.author_id not in policy.allowed_bots
    ):
        return None
    addressed = (
        view.guild_id is None
        or view.mentions_bot
        or view.reply_to_author_id == policy.bot_id
        or _is_followed_thread(view, policy)
    )
    listened = view.channel_id in policy.listen_channels or (
        view.thread_parent_id is not None and view.thread_parent_id in policy.listen_channels
    )
    if not addressed and not listened:
        return None
    text = clean_text(
        view.content,
        bot_id=policy.bot_id,
        bot_role_ids=policy.bot_role_ids | view.bot_role_ids,
        user_names=view.user_names,
        role_names=view.role_names,
        channel_names=view.channel_names,
    )
    if not text and not view.mentions_bot and not view.images and not view.audio:
        # Nothing to answer. In a followed thread or listened channel this is what a message looks like when
        # the message-content intent is off: Discord sends it with empty content.
        return None
    return Turn(
        author=Author(view.author_id, view.author_name, view.author_is_bot, view.author_is_admin),
        place=place_for(view.guild_id, view.channel_id, view.thread_parent_id),
        text=text,
        message_id=view.id,
        addressed=addressed,
        event_id=view.id,
        images=view.images,
        audio=view.audio,
    )


def turn_from_interaction(view: InteractionView, *, args_option: str | None) -> Turn:
    """A slash command -> a turn carrying a :class:`CommandCall`.

    ``args_option`` names the option that holds the command's free-text argument (``prompt`` for /story).
    """
    options = dict(view.options)
    args = options.pop(args_option, "") if args_option else ""
    shown = " ".join([f"/{view.command}", args, *(f"--{k} {v}" for k, v in options.items())]).strip()
    return Turn(
        author=Author(view.user_id, view.user_name, view.user_is_bot, view.user_is_admin),
        place=place_for(view.guild_id, view.channel_id, view.thread_parent_id),
        text=shown,
        message_id=view.id,
        addressed=True,
        event_id=view.id,
        command=CommandCall(name=view.command, args=args, options=MappingProxyType(options)),
    )


def story_vote(custom_id: str) -> Choice | None:
    """The choice a story button stands for (story, round, number), or None for other buttons. A button
    from before story ids (``parley_story:<round>:<n>``) names no story: the core refuses it privately."""
    if not custom_id.startswith(STORY_BUTTON):
        return None
    value = custom_id[len(STORY_BUTTON) :]
    choice = Choice.parse(value)
    if choice is None:
        n = value.rpartition(":")[2]
        return Choice("0", 0, int(n[:1])) if n.isdigit() else None
    return choice


def thread_name(text: str, limit: int = 80) -> str:
    """A thread title from the first line of a message (Discord allows 100 characters)."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "") or "Conversation"
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


# ---------------------------------------------------------------------------------------------- views


def _display_name(user: discord.abc.User) -> str:
    return user.display_name or user.name


def _thread_facts(channel: object) -> tuple[str | None, str | None]:
    if isinstance(channel, discord.Thread):
        return str(channel.parent_id), (str(channel.owner_id) if channel.owner_id else None)
    return None, None


def _is_admin(user: discord.abc.User) -> bool:
    if isinstance(user, discord.Member):
        perms = user.guild_permissions
        return perms.manage_guild or perms.administrator
    return False


def image_refs(attachments: list[discord.Attachment]) -> tuple[ImageRef, ...]:
    """The image attachments of a message, as references (the bytes are fetched by the worker)."""
    return tuple(
        ImageRef(
            url=a.url,
            mime=a.content_type or "",
            size=a.size,
            name=a.filename,
            caption=a.description or "",
            id=str(a.id),
        )
        for a in attachments
        if (a.content_type or "").startswith("image/")
    )


def audio_refs(attachments: list[discord.Attachment], *, voice: bool) -> tuple[AudioRef, ...]:
    """Voice messages (flag IS_VOICE_MESSAGE, with ``duration_secs``) and audio attachments, as references."""
    return tuple(
        AudioRef(
            url=a.url,
            mime=a.content_type or "",
            size=a.size,
            name=a.filename,
            id=str(a.id),
            duration=float(a.duration or 0),
            voice=voice,
        )
        for a in attachments
        if (a.content_type or "").startswith("audio/")
    )


def message_view(message: discord.Message, bot_user_id: int) -> MessageView:
    """Copy what we need out of a discord.py :class:`discord.Message`."""
    guild = message.guild
    bot_roles = {guild.self_role.id} if guild is not None and guild.self_role is not None else set()
    mentions_bot = any(u.id == bot_user_id for u in message.mentions) or any(
        r.id in bot_roles for r in message.role_mentions
    )
    reply_to: str | None = None
    ref = message.reference
    if ref is not None:
        resolved = ref.resolved if ref.resolved is not None else ref.cached_message
        if isinstance(resolved, discord.Message):
            reply_to = str(resolved.author.id)
    parent, owner = _thread_facts(message.channel)
    return MessageView(
        id=str(message.id),
        channel_id=str(message.channel.id),
        guild_id=str(guild.id) if guild is not None else None,
        author_id=str(message.author.id),
        author_name=_display_name(message.author),
        content=message.content,
        author_is_bot=message.author.bot,
        author_is_admin=_is_admin(message.author),
        is_webhook=message.webhook_id is not None,
        is_chat=message.type in _CHAT_TYPES,
        mentions_bot=mentions_bot,
        reply_to_author_id=reply_to,
        thread_parent_id=parent,
        thread_owner_id=owner,
        bot_role_ids=frozenset(map(str, bot_roles)),
        user_names=MappingProxyType({str(u.id): _display_name(u) for u in message.mentions}),
        role_names=MappingProxyType({str(r.id): r.name for r in message.role_mentions}),
        channel_names=MappingProxyType(
            {str(c.id): getattr(c, "name", "channel") for c in message.channel_mentions}
        ),
        images=image_refs(message.attachments),
        audio=audio_refs(message.attachments, voice=message.flags.voice),
    )


def _flatten_options(options: object) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not isinstance(options, list):
        return out
    for option in options:
        if not isinstance(option, dict):
            continue
        if "options" in option:  # a subcommand or group: flatten its options
            out += _flatten_options(option["options"])
        elif "value" in option:
            value = option["value"]
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            out.append((str(option["name"]), text))
    return out


def interaction_view(interaction: discord.Interaction[discord.Client]) -> InteractionView:
    """Copy what we need out of a discord.py application-command :class:`discord.Interaction`."""
    data: Mapping[str, object] = interaction.data or {}
    permissions = interaction.permissions
    parent, _owner = _thread_facts(interaction.channel)
    return InteractionView(
        id=str(interaction.id),
        command=str(data.get("name", "")),
        options=tuple(_flatten_options(data.get("options"))),
        user_id=str(interaction.user.id),
        user_name=_display_name(interaction.user),
        channel_id=str(interaction.channel_id),
        guild_id=str(interaction.guild_id) if interaction.guild_id is not None else None,
        user_is_bot=interaction.user.bot,
        user_is_admin=interaction.guild_id is not None
        and (permissions.manage_guild or permissions.administrator),
        thread_parent_id=parent,
    )
