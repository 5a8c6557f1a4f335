"""Discord message / interaction -> Turn: the pure rules, and the views taken from real discord.py objects."""

from __future__ import annotations

import dataclasses

import pytest

from adapters.discord.translate import (
    DM_WORKSPACE,
    MessagePolicy,
    MessageView,
    clean_text,
    interaction_view,
    message_view,
    thread_name,
    turn_from_interaction,
    turn_from_message,
)
from core.types import Place
from tests.discord.offline import OfflineDiscord
from tests.fakes.discord import payloads as p

BOT = "1000"
POLICY = MessagePolicy(bot_id=BOT)


def view(**changes: object) -> MessageView:
    base = MessageView(
        id="42",
        channel_id="10",
        guild_id="1",
        author_id="7",
        author_name="Alice",
        content="hello there",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- pure rules


def test_mention_starts_an_addressed_turn_without_the_mention() -> None:
    turn = turn_from_message(view(content=f"<@{BOT}> tell me a joke", mentions_bot=True), POLICY)
    assert turn is not None
    assert turn.text == "tell me a joke"
    assert turn.addressed
    assert turn.place == Place("discord", "1", "10", "")
    assert (turn.author.id, turn.author.display_name) == ("7", "Alice")
    assert turn.message_id == turn.event_id == "42"
    assert turn.command is None


def test_nickname_mention_form_is_stripped_too() -> None:
    turn = turn_from_message(view(content=f"hey <@!{BOT}>, what's up", mentions_bot=True), POLICY)
    assert turn is not None
    assert turn.text == "hey , what's up"


def test_unaddressed_channel_message_is_ignored() -> None:
    assert turn_from_message(view(content="just chatting"), POLICY) is None


def test_dm_is_addressed_and_per_user() -> None:
    turn = turn_from_message(view(guild_id=None, channel_id="555"), POLICY)
    assert turn is not None
    assert turn.addressed
    assert turn.place == Place("discord", DM_WORKSPACE, "555", "")


def test_reply_to_the_bot_is_addressed() -> None:
    turn = turn_from_message(view(reply_to_author_id=BOT), POLICY)
    assert turn is not None
    assert turn.addressed


def test_reply_to_someone_else_is_not() -> None:
    assert turn_from_message(view(reply_to_author_id="8"), POLICY) is None


def test_message_in_the_bots_own_thread_is_a_follow_up() -> None:
    turn = turn_from_message(view(channel_id="77", thread_parent_id="10", thread_owner_id=BOT), POLICY)
    assert turn is not None
    assert turn.place == Place("discord", "1", "10", "77")


@pytest.mark.parametrize("followed", ["77", "10"])
def test_configured_threads_are_followed_by_id_or_parent(followed: str) -> None:
    policy = dataclasses.replace(POLICY, follow_threads=frozenset({followed}))
    msg = view(channel_id="77", thread_parent_id="10", thread_owner_id="7")
    assert turn_from_message(msg, POLICY) is None
    assert turn_from_message(msg, policy) is not None


def test_thread_message_without_content_is_ignored() -> None:
    # What Discord sends without the message-content intent: the content is blank.
    assert (
        turn_from_message(
            view(channel_id="77", thread_parent_id="10", thread_owner_id=BOT, content=""), POLICY
        )
        is None
    )


def test_bare_mention_is_still_a_turn() -> None:
    turn = turn_from_message(view(content=f"<@{BOT}>", mentions_bot=True), POLICY)
    assert turn is not None
    assert turn.text == ""


def test_own_messages_are_ignored_even_when_they_mention_the_bot() -> None:
    assert turn_from_message(view(author_id=BOT, mentions_bot=True, guild_id=None), POLICY) is None


def test_other_bots_and_webhooks_are_ignored_by_default() -> None:
    assert turn_from_message(view(author_is_bot=True, mentions_bot=True), POLICY) is None
    assert turn_from_message(view(is_webhook=True, mentions_bot=True), POLICY) is None


def test_other_bots_can_be_allowed() -> None:
    msg = view(author_is_bot=True, mentions_bot=True)
    assert turn_from_message(msg, dataclasses.replace(POLICY, allowed_bots=frozenset({"7"}))) is not None
    assert turn_from_message(msg, dataclasses.replace(POLICY, ignore_bots=False)) is not None


def test_system_messages_are_ignored() -> None:
    assert turn_from_message(view(is_chat=False, guild_id=None), POLICY) is None


def test_listened_channel_gives_unaddressed_turns() -> None:
    policy = dataclasses.replace(POLICY, listen_channels=frozenset({"10"}))
    turn = turn_from_message(view(content="anyone here?"), policy)
    assert turn is not None
    assert not turn.addressed
    mentioned = turn_from_message(view(content=f"<@{BOT}> hi", mentions_bot=True), policy)
    assert mentioned is not None
    assert mentioned.addressed


def test_clean_text_makes_other_mentions_readable() -> None:
    text = clean_text(
        f"<@{BOT}> ask <@7> and <@!8> in <#10>, ping <@&9> <@&1001>",
        bot_id=BOT,
        bot_role_ids=frozenset({"1001"}),
        user_names={"7": "Alice"},
        role_names={"9": "mods"},
        channel_names={"10": "general"},
    )
    assert text == "ask @Alice and @someone in #general, ping @mods"


def test_interaction_becomes_a_command_turn() -> None:
    from adapters.discord.translate import InteractionView

    iv = InteractionView(
        id="99",
        command="story",
        options=(("prompt", "a dragon who bakes"), ("genre", "comedy")),
        user_id="7",
        user_name="Alice",
        channel_id="10",
        guild_id="1",
        user_is_admin=True,
    )
    turn = turn_from_interaction(iv, args_option="prompt")
    assert turn.command is not None
    assert turn.command.name == "story"
    assert turn.command.args == "a dragon who bakes"
    assert dict(turn.command.options) == {"genre": "comedy"}
    assert turn.text == "/story a dragon who bakes --genre comedy"
    assert turn.author.is_admin
    assert turn.event_id == "99"
    assert turn.place == Place("discord", "1", "10", "")


def test_thread_name_takes_the_first_line_and_clips() -> None:
    assert thread_name("\n  Dragons?\nmore") == "Dragons?"
    assert len(thread_name("x" * 300)) == 80
    assert thread_name("   ") == "Conversation"


# ---------------------------------------------------------------------------------------------- views


@pytest.fixture
def offline() -> OfflineDiscord:
    return OfflineDiscord()


def test_view_of_a_mention(offline: OfflineDiscord) -> None:
    w = offline.world
    payload = p.message(
        channel_id=w.general["id"],
        guild_id=w.guild_id,
        author=w.alice,
        content=f"<@{w.app_id}> hi <@{w.bob['id']}>",
        mentions=[w.bot, w.bob],
    )
    v = message_view(offline.message(payload), offline.bot_id)
    assert v.mentions_bot
    assert v.guild_id == w.guild_id
    assert v.author_name == "Alice"
    assert v.user_names[w.bob["id"]] == "Bob"
    assert v.thread_parent_id is None
    assert not v.author_is_admin
    turn = turn_from_message(v, MessagePolicy(bot_id=w.app_id))
    assert turn is not None
    assert turn.text == "hi @Bob"


def test_view_of_a_reply_to_the_bot(offline: OfflineDiscord) -> None:
    w = offline.world
    mine = p.message(channel_id=w.general["id"], guild_id=w.guild_id, author=w.bot, content="earlier answer")
    payload = p.message(
        channel_id=w.general["id"], guild_id=w.guild_id, author=w.alice, content="and then?", referenced=mine
    )
    v = message_view(offline.message(payload), offline.bot_id)
    assert v.reply_to_author_id == w.app_id
    assert v.is_chat  # type 19 (reply) is a chat message


def test_view_in_the_bots_thread(offline: OfflineDiscord) -> None:
    w = offline.world
    payload = p.message(channel_id=w.bot_thread["id"], guild_id=w.guild_id, author=w.alice, content="more!")
    v = message_view(offline.message(payload), offline.bot_id)
    assert (v.thread_parent_id, v.thread_owner_id) == (w.general["id"], w.app_id)


def test_view_of_a_dm_and_of_the_guild_owner(offline: OfflineDiscord) -> None:
    w = offline.world
    dm = message_view(
        offline.message(p.message(channel_id="123", author=w.alice, content="psst")), offline.bot_id
    )
    assert dm.guild_id is None
    owner_msg = p.message(
        channel_id=w.general["id"],
        guild_id=w.guild_id,
        author=w.owner,
        content="hi",
        author_member=p.member(None),
    )
    assert message_view(offline.message(owner_msg), offline.bot_id).author_is_admin


def test_view_of_a_system_message(offline: OfflineDiscord) -> None:
    w = offline.world
    payload = p.message(
        channel_id=w.general["id"], guild_id=w.guild_id, author=w.alice, content="", message_type=7
    )  # 7 = member join
    assert not message_view(offline.message(payload), offline.bot_id).is_chat


def test_interaction_view_flattens_options_and_reads_permissions(offline: OfflineDiscord) -> None:
    w = offline.world
    payload = p.slash_command(
        application_id=w.app_id,
        name="story",
        user_data=w.alice,
        channel=w.general,
        guild_id=w.guild_id,
        options=[
            p.option("prompt", "space whales"),
            p.option("continue", True, 5),
            p.option("words", 300, 4),
        ],
        permissions=p.MEMBER_DEFAULT | p.MANAGE_GUILD,
    )
    iv = interaction_view(offline.interaction(payload))
    assert iv.command == "story"
    assert iv.options == (("prompt", "space whales"), ("continue", "true"), ("words", "300"))
    assert iv.user_is_admin
    assert iv.guild_id == w.guild_id
    plain = p.slash_command(
        application_id=w.app_id, name="help", user_data=w.bob, channel=w.general, guild_id=w.guild_id
    )
    assert not interaction_view(offline.interaction(plain)).user_is_admin
