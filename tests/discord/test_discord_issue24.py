"""Issue 24: what a red team found in the arcade bot on Discord, each against the fake Discord (real
discord.py, real Redis, fake OpenAI): link previews, DM image quotas, /reset over an admin's persona, DM
scoreboards, typed commands an admin restricted, command options past moderation, link wrapping."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from adapters.discord.permissions import restricted_names
from bots.loader import load_bot
from core.bot import BotSpec
from core.commands import Command, CommandOption
from core.context import TurnContext
from core.types import CommandCall, ReplyKind
from tests.conftest import RuntimeFactory, without_limits
from tests.core.helpers import make_turn
from tests.discord.conftest import SUPPRESS_EMBEDS, BotFactory, unsuppressed_requests
from tests.fakes.discord import FakeDiscord, autolinks
from tests.fakes.discord import payloads as p
from tests.fakes.openai_server import Call, FakeOpenAI, Reply, ToolCalls

LINK = "https://evil.example/collect?secret=42"


def arcade(**story: Any) -> BotSpec:
    spec = without_limits(load_bot("arcade"))
    if story:
        cfg = spec.config.model_copy(update={"story": spec.config.story.model_copy(update=story)})
        spec = dataclasses.replace(spec, config=cfg)
    return spec


def with_persona(spec: BotSpec, name: str, **changes: Any) -> BotSpec:
    personas = {**spec.personas, name: dataclasses.replace(spec.personas[name], **changes)}
    return dataclasses.replace(spec, personas=personas)


def buttons(message: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message.get("components", []) for c in row.get("components", [])]


# ------------------------------------------------------------------------------ 1. suppressed embeds


async def test_every_message_the_bot_writes_or_edits_is_suppressed(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    """Chat (streamed, so edited), a DM, slash commands (deferred, then edited; long ones in follow-ups),
    a story with vote buttons, /imagine's upload, a confirm question: every request that writes content
    carries SUPPRESS_EMBEDS, and no message ends unsuppressed."""
    fake = fake_discord
    streamed = f"Here is the link you asked for: {LINK} " + " ".join(f"w{i}" for i in range(60))
    long_story = "\n\n".join(f"Part {i}: {LINK} " + "the sea was calm. " * 40 for i in range(5))
    fake_openai.queue(
        Reply(streamed, chunk_chars=30, delay=0.05),  # chat: posted, then edited several times
        Reply(f"psst {LINK}"),  # the DM
        Reply(f"A lighthouse story {LINK}\n\nChoices:\n1. Climb\n2. Sail", chunk_chars=15, delay=0.02),
        Reply(long_story, chunk_chars=400),  # a long single-shot answer: the original, then follow-ups
        ToolCalls([Call("trivia_award", {"player": "Alice", "points": 1})], text=f"Correct! {LINK} "),
    )
    async with bot_factory(spec=arcade(branching=True, vote_seconds=600), edit_interval=0.2):
        await fake.send_message("give me the link", mention_bot=True)
        await fake.wait_for(lambda: any(m["content"].endswith("w59") for m in fake.bot_messages()))
        await fake.send_dm("a secret link?")
        dm = fake.dm_channel_for(fake.alice)
        await fake.wait_for(lambda: fake.bot_messages(dm["id"]))
        await fake.slash("story", {"prompt": "a lighthouse"})
        await fake.wait_for(lambda: any(buttons(m) for m in fake.bot_messages()))
        await fake.slash("story", {"prompt": "a sailor"}, channel=fake.random)
        await fake.wait_for(
            lambda: any("The end" in m["content"] for m in fake.bot_messages(fake.random["id"]))
        )
        await fake.slash("imagine", {"prompt": "a kite"})
        await fake.wait_for(lambda: fake.uploads)
        await fake.slash("help")
        await fake.send_message("I answered Paris", mention_bot=True, channel=fake.bot_thread)
        await fake.wait_for(
            lambda: any(buttons(m) and "Confirm" in m["content"] for m in fake.bot_messages())
        )
        await fake.wait_for(lambda: all(not m["content"].endswith(" …") for m in fake.bot_messages()))
    edits = fake.calls_to("PATCH", r"/(channels|webhooks)/.*")
    assert len(edits) >= 5  # streamed chat and deferred slash answers were edited
    assert fake.calls_to("POST", r"/webhooks/.*")  # follow-ups and the upload
    assert unsuppressed_requests(fake) == []
    shown = [m for m in fake.bot_messages() if m["content"] or m["attachments"]]
    assert len(shown) >= 8
    assert [m["content"][:40] for m in shown if not m["flags"] & SUPPRESS_EMBEDS] == []
    assert fake.unfurls == []


async def test_a_persona_may_opt_in_to_link_previews(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.queue(Reply(f"Read {LINK}", chunk_chars=4, delay=0.02))
    spec = with_persona(arcade(), "host", link_previews=True)
    async with bot_factory(spec=spec, edit_interval=0.2, unfurls_allowed=True):
        await fake.send_message("a link please", mention_bot=True)
        await fake.wait_for(
            lambda: fake.bot_messages() and fake.bot_messages()[-1]["content"] == f"Read {LINK}"
        )
    (message,) = fake.bot_messages()
    assert not message["flags"] & SUPPRESS_EMBEDS  # the final edit let it unfurl
    assert [u.url for u in fake.unfurls][-1] == LINK


# ------------------------------------------------------------------------------ 9. link wrapping

GLUED = "HTTPS://a.example/1 Https://b.example/2 xhttps://c.example/3 /https://d.example/4 (hTTp://e.example)"


async def test_every_link_form_discord_autolinks_is_wrapped(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.queue(Reply(f"Links: {GLUED}"))
    async with bot_factory():
        await fake.send_message("links please", mention_bot=True)
        await fake.wait_for(lambda: fake.bot_messages() and "e.example" in fake.bot_messages()[-1]["content"])
        await fake.wait_for(lambda: not fake.bot_messages()[-1]["content"].endswith(" …"))
    content = fake.bot_messages()[-1]["content"]
    assert autolinks(content) == [], content  # Discord would link none of them: each sits in <...>
    for host in "abcde":
        assert f"{host}.example" in content
    assert "x<https://c.example/3>" in content and "/<https://d.example/4>" in content


# ------------------------------------------------------------------------------ 2. image quotas in DMs


def images(spec: BotSpec, **limits: Any) -> BotSpec:
    cfg = spec.config.model_copy(update={"images": spec.config.images.model_copy(update=limits)})
    return dataclasses.replace(spec, config=cfg)


async def test_dm_users_each_have_their_own_image_quota_story_covers_included(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    spec = images(arcade(branching=True, cover=True), user_daily=10, workspace_daily=2)
    fake_openai.queue(Reply("A small story.\n\nChoices:\n1. On\n2. Off"))
    async with bot_factory(spec=spec):
        for n in (1, 2):
            await fake.slash("imagine", {"prompt": f"alice's kite {n}"}, dm=True)
            await fake.wait_for(lambda n=n: len(fake.uploads) == n)
        # Alice's third picture in her DM is over *her* DM quota (2: the "server" quota of a DM is hers).
        await fake.slash("imagine", {"prompt": "alice's kite 3"}, dm=True)
        await fake.wait_for(lambda: any("That's your 2 images" in m["content"] for m in fake.bot_messages()))
        # Bob, in his own DM, is not affected by Alice's pictures: his picture and his story's cover.
        await fake.slash("imagine", {"prompt": "bob's boat"}, author=fake.bob, dm=True)
        await fake.wait_for(lambda: len(fake.uploads) == 3)
        await fake.slash("story", {"prompt": "a boat"}, author=fake.bob, dm=True)
        await fake.wait_for(lambda: len(fake.uploads) == 4)
        bob_dm = fake.dm_channel_for(fake.bob)["id"]
        await fake.wait_for(
            lambda: any("On" in str(buttons(m)) or buttons(m) for m in fake.bot_messages(bob_dm))
        )
    assert [u.filename.split("-")[0] for u in fake.uploads] == ["imagine", "imagine", "imagine", "story"]
    assert len(fake_openai.image_requests) == 4
    assert not any("this server's" in m["content"] for m in fake.bot_messages())


# ------------------------------------------------------------------------------ 6. DM scoreboards


async def test_dm_users_do_not_share_a_trivia_scoreboard(
    bot_factory: BotFactory,
    fake_discord: FakeDiscord,
    fake_openai: FakeOpenAI,
    redis_client: aioredis.Redis,
) -> None:
    fake = fake_discord
    fake_openai.queue(
        ToolCalls([Call("trivia_award", {"player": "SecretAlias", "points": 3})], text="Correct! "),
        Reply("3 points to SecretAlias!"),
        ToolCalls([Call("trivia_scoreboard", {})]),
        Reply("Here is the board."),
    )
    async with bot_factory(spec=arcade()):
        await fake.send_dm("I answered Paris, points please")
        alice_dm = fake.dm_channel_for(fake.alice)["id"]
        await fake.wait_for(lambda: any(buttons(m) for m in fake.bot_messages(alice_dm)))
        (asking,) = [m for m in fake.bot_messages(alice_dm) if buttons(m)]
        await fake.click(asking, buttons(asking)[0])
        await fake.wait_for(lambda: any("3 points" in m["content"] for m in fake.bot_messages(alice_dm)))
        await fake.send_dm("show me the scoreboard", author=fake.bob)
        bob_dm = fake.dm_channel_for(fake.bob)["id"]
        await fake.wait_for(lambda: any("the board" in m["content"] for m in fake.bot_messages(bob_dm)))
    board_seen_by_bob = fake_openai.chat_requests[-1].body["messages"][-1]["content"]
    assert "trivia_scoreboard" in board_seen_by_bob
    assert "SecretAlias" not in board_seen_by_bob
    assert "No trivia points yet" in board_seen_by_bob
    assert await redis_client.exists("parley:arcade:trivia:discord:@me") == 0


# ------------------------------------------------------------------------------ 8. options are moderated


async def test_a_typed_story_option_cannot_carry_text_past_moderation(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.flagged_words.add("forbidden")
    fake_openai.text_flag_category = "sexual"  # refused outright by arcade's relaxed profile
    fake_openai.queue(Reply("A horror story.\n\nChoices:\n1. Run\n2. Hide"))
    async with bot_factory(spec=arcade(branching=True, vote_seconds=600)):
        await fake.send_message("/story a calm lake --genre forbidden-thing", mention_bot=True)
        await fake.wait_for(
            lambda: any("--genre must be one of" in m["content"] for m in fake.bot_messages())
        )
        await fake.send_message("/story a calm lake --genre horror", mention_bot=True)
        await fake.wait_for(lambda: any("horror story" in m["content"] for m in fake.bot_messages()))
    prompts = [str(r.body["messages"]) for r in fake_openai.chat_requests]
    assert len(prompts) == 1
    assert "forbidden" not in prompts[0]
    assert "Genre: horror" in prompts[0]


async def test_free_text_options_are_moderated_like_arguments(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.flagged_words.add("forbidden")
    fake_openai.text_flag_category = "sexual"
    seen: list[str] = []

    async def echo(ctx: TurnContext, call: CommandCall) -> AsyncIterator[str]:
        seen.append(call.options.get("mood", ""))
        yield "ok"

    async with runtime_factory(spec=arcade()) as rt:
        rt.engine.commands.add(
            Command("echo", "echo", echo, usage="<text>", options=(CommandOption("mood", "m"),))
        )
        refused = await rt.engine.collect(make_turn("/echo hello --mood forbidden"))
        fine = await rt.engine.collect(make_turn("/echo hello --mood cheerful"))
    assert refused.kind is ReplyKind.REFUSAL
    assert fine.text == "ok"
    assert seen == ["cheerful"]
    assert any(r.body.get("input") == "forbidden" for r in fake_openai.moderation_requests)


# ------------------------------------------------------------------------- 3. /reset, /forget vs settings

ADMIN = p.MEMBER_DEFAULT | p.MANAGE_GUILD


def answered(fake: FakeDiscord, interaction: dict[str, Any]) -> str:
    state = fake.interactions[interaction["id"]]
    texts = [fake.messages.get(i, {}).get("content", "") for i in [state.original_id or "", *state.followups]]
    return "\n".join(t for t in texts if t)


async def test_a_members_reset_keeps_the_admins_persona_and_the_others_messages(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    async with bot_factory(spec=arcade()):
        persona = await fake.slash("persona", {"name": "pirate"}, author=fake.owner, permissions=ADMIN)
        await fake.wait_for(lambda: "Saltbeard" in answered(fake, persona))
        await fake.send_message("alice's secret plan", mention_bot=True)
        await fake.wait_for(lambda: len(fake_openai.chat_requests) == 1)
        await fake.send_message("bob's question", mention_bot=True, author=fake.bob)
        await fake.wait_for(lambda: len(fake_openai.chat_requests) == 2)
        await fake.wait_for(lambda: len([m for m in fake.bot_messages() if "You said" in m["content"]]) == 2)
        reset = await fake.slash("reset")  # Alice, a member
        await fake.wait_for(lambda: "Done" in answered(fake, reset))
        said = answered(fake, reset)
        assert "forgot your messages here" in said and "(2 messages)" in said
        assert "only an admin's /reset" in said
        assert "persona *pirate*" in said
        await fake.send_message("what now?", mention_bot=True, author=fake.bob)
        await fake.wait_for(lambda: len(fake_openai.chat_requests) == 3)
        # /forget in a channel that holds only Alice's messages: her messages go, the admin's persona stays.
        persona = await fake.slash(
            "persona", {"name": "pirate"}, author=fake.owner, permissions=ADMIN, channel=fake.random
        )
        await fake.wait_for(lambda: "Saltbeard" in answered(fake, persona))
        await fake.send_message("only me here", mention_bot=True, channel=fake.random)
        await fake.wait_for(lambda: len(fake_openai.chat_requests) == 4)
        await fake.wait_for(lambda: fake.bot_messages(fake.random["id"]))
        forget = await fake.slash("forget", channel=fake.random)
        await fake.wait_for(lambda: "Done" in answered(fake, forget))
        await fake.send_message("still a pirate?", mention_bot=True, channel=fake.random)
        await fake.wait_for(lambda: len(fake_openai.chat_requests) == 5)
    after_reset = fake_openai.chat_requests[2].body["messages"]
    assert "Captain Saltbeard" in after_reset[0]["content"]
    contents = str(after_reset)
    assert "bob's question" in contents and "alice's secret plan" not in contents
    after_forget = fake_openai.chat_requests[4].body["messages"]
    assert "Captain Saltbeard" in after_forget[0]["content"]
    assert "only me here" not in str(after_forget)


async def test_an_admins_reset_clears_the_channel_but_keeps_the_persona(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    async with bot_factory(spec=arcade()):
        persona = await fake.slash("persona", {"name": "pirate"}, author=fake.owner, permissions=ADMIN)
        await fake.wait_for(lambda: "Saltbeard" in answered(fake, persona))
        await fake.send_message("alice's secret plan", mention_bot=True)
        await fake.wait_for(lambda: len(fake_openai.chat_requests) == 1)
        await fake.wait_for(lambda: any("You said" in m["content"] for m in fake.bot_messages()))
        reset = await fake.slash("reset", author=fake.owner, permissions=ADMIN)
        await fake.wait_for(lambda: "Done" in answered(fake, reset))
        assert "forgotten this conversation" in answered(fake, reset)
        await fake.send_message("fresh start", mention_bot=True, author=fake.bob)
        await fake.wait_for(lambda: len(fake_openai.chat_requests) == 2)
    fresh = fake_openai.chat_requests[1].body["messages"]
    assert "Captain Saltbeard" in fresh[0]["content"]
    assert "alice's secret plan" not in str(fresh)


# ------------------------------------------------------------------------- 7. typed commands vs permissions


async def test_a_typed_command_an_admin_restricted_is_refused(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI, redis_client: aioredis.Redis
) -> None:
    fake = fake_discord
    async with bot_factory(spec=arcade()) as bot:
        cache = bot.runtime.keys.scoped("discord", "command_permissions", fake.guild_id)
        await fake.send_message("/imagine a kite", mention_bot=True)
        await fake.wait_for(lambda: len(fake.uploads) == 1)  # not restricted: the typed form works
        assert await redis_client.exists(cache)
        # The admin limits /imagine to one role (and denies @everyone) in Server Settings > Integrations.
        role = p.snowflake()
        await fake.restrict_command(
            "imagine",
            [
                {"id": role, "type": 1, "permission": True},
                {"id": fake.guild_id, "type": 1, "permission": False},
            ],
        )
        await fake.wait_for(lambda: fake.calls_to("GET", r"/users/@me") is not None)
        for _ in range(200):  # the gateway event drops the cached permissions
            if not await redis_client.exists(cache):
                break
            await asyncio.sleep(0.02)
        asked = await fake.send_message("/imagine a boat", mention_bot=True)
        await fake.wait_for(
            lambda: any("An admin limited /imagine" in m["content"] for m in fake.bot_messages())
        )
        refusal = next(m for m in fake.bot_messages() if "An admin limited" in m["content"])
        assert refusal["message_reference"]["message_id"] == asked["id"]
        await fake.send_message("/help", mention_bot=True)  # an unrestricted command still works typed
        await fake.wait_for(
            lambda: any("understands these commands" in m["content"] for m in fake.bot_messages())
        )
    assert len(fake_openai.image_requests) == 1
    assert fake.calls_to("GET", r"/applications/\d+/guilds/\d+/commands/permissions")


def test_restricted_names_from_discords_permission_entries() -> None:
    commands = [{"id": "1", "name": "imagine"}, {"id": "2", "name": "story"}, {"id": "3", "name": "help"}]
    role = {"id": "9", "type": 1, "permission": True}
    assert restricted_names([], commands, "app") == frozenset()
    assert restricted_names([{"id": "1", "permissions": [role]}], commands, "app") == {"imagine"}
    assert restricted_names([{"id": "2", "permissions": []}], commands, "app") == frozenset()  # reset
    assert restricted_names([{"id": "app", "permissions": [role]}], commands, "app") == {
        "imagine",
        "story",
        "help",
    }
