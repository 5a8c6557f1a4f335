"""The branching ``/story``: parts end with choices; in the terminal the reader picks, in a channel players
vote for a time-boxed window, counted once per person in Redis across replicas; the story survives a
restart; ``/story end`` recaps it."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import redis.asyncio as aioredis

from bots.loader import load_bot
from core.bot import BotSpec
from core.keys import KeySpace
from core.ops.jobs import Route
from core.story import StoryClock, StoryState, StoryStore, parse_choices
from core.types import Author, Choice, CommandCall, Place, ReplyKind, Turn
from tests.conftest import RuntimeFactory, without_limits
from tests.discord.conftest import BotFactory
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply, last_user_text
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.scale.helpers import MemoryDelivery, eventually
from tests.slack.conftest import RUNTIME, StartSlack, support_spec

CHANNEL = Place("discord", "g1", "c1")


def part(n: int) -> Reply:
    return Reply(
        f"Part {n}: the dragon wakes.\n\nChoices:\n1. Fly north\n2. Hide in the cave\n3. Talk to it",
        chunk_chars=5,
    )


def spec(vote_seconds: float = 1.0) -> BotSpec:
    base = without_limits(load_bot("arcade"))
    story = base.config.story.model_copy(update={"branching": True, "vote_seconds": vote_seconds})
    return dataclasses.replace(base, config=base.config.model_copy(update={"story": story}))


def story_turn(args: str, user: str = "alice", place: Place = CHANNEL) -> Turn:
    return Turn(Author(user, user.title()), place, f"/story {args}", command=CommandCall("story", args))


def test_parse_choices_cuts_the_block_off_the_story() -> None:
    text, choices = parse_choices("Once.\n\nChoices:\n1. Go left\n2) **Go right**\n")
    assert text == "Once."
    assert choices == ["Go left", "Go right"]
    assert parse_choices("Just prose.\n1. Not a list end\nMore prose.") == (
        "Just prose.\n1. Not a list end\nMore prose.",
        [],
    )


async def test_the_terminal_reader_picks_and_ends_with_a_recap(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    console = Place("console", "local", "me", "default", is_direct=True)  # as the terminal adapter says
    fake_openai.queue(part(1), part(2), Reply("A dragon woke, hid, and made a friend."))
    async with runtime_factory(spec=spec()) as rt:
        first = await rt.engine.collect(story_turn("a sleepy dragon", place=console))
        assert [(c.round, c.number, c.label) for c in first.choices] == [
            (1, 1, "Fly north"),
            (1, 2, "Hide in the cave"),
            (1, 3, "Talk to it"),
        ]
        assert len({c.story for c in first.choices}) == 1  # one story id on every button
        assert "Part 1: the dragon wakes." in first.text and "2. Hide in the cave" in first.text
        assert "Choices:" not in first.text  # the raw block is replaced by the formatted one
        second = await rt.engine.collect(story_turn("2", place=console))
        assert "➜ Hide in the cave" in second.text and second.choices[0].round == 2
        assert "The players chose: Hide in the cave" in last_user_text(fake_openai.chat_requests[-1].body)
        end = await rt.engine.collect(story_turn("end", place=console))
        assert "A dragon woke, hid, and made a friend." in end.text
        assert await rt.engine.story.load(console) is None  # type: ignore[union-attr]
    # The recap saw both parts.
    recap = fake_openai.chat_requests[-1].body["messages"]
    assert [m["content"] for m in recap if m["role"] == "assistant"] == [
        "Part 1: the dragon wakes.",
        "Part 2: the dragon wakes.",
    ]


async def test_five_players_vote_across_two_replicas_each_counted_once(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(part(1), part(2))
    one, two = MemoryDelivery("one"), MemoryDelivery("two")
    runtime = {"parley_queue": False}
    async with (
        runtime_factory(spec=spec(2.0), **runtime) as a,
        runtime_factory(spec=spec(2.0), **runtime) as b,
    ):
        a.ops.deliveries.register("discord", one)
        b.ops.deliveries.register("discord", two)
        opened = await a.engine.collect(story_turn("a dragon in the hills"))
        assert len(opened.choices) == 3
        votes = [
            ("p1", "2", a),
            ("p2", "2", b),
            ("p3", "3", a),
            ("p4", "2", b),
            ("p5", "1", a),
            ("p3", "3", b),
        ]
        answers = [await rt.engine.collect(story_turn(n, user)) for user, n, rt in votes]
        assert all(r.ephemeral for r in answers)
        assert "5 voted so far" in answers[-1].text  # p3 voted twice: counted once

        # The window closes on whichever replica's clock comes first; the story goes on exactly once.
        async def continued() -> bool:
            return len(one.delivered) + len(two.delivered) >= 1

        await eventually(continued, within=10, what="the continuation")
        done = [*one.delivered, *two.delivered]
        assert len(done) == 1 and done[0].kind == ReplyKind.COMMAND.value
        assert "*➜ Hide in the cave* (5 votes)" in done[0].text
        state = await a.engine.story.load(CHANNEL)  # type: ignore[union-attr]
        assert state is not None and state.round == 2 and state.voting
        late = await b.engine.collect(story_turn("1", "p6"))  # round 1 is over: not counted for round 2
    assert "Vote counted for 1" in late.text  # ... it is a vote in the new round
    assert len(fake_openai.chat_requests) == 2


async def test_a_story_survives_a_restart_mid_vote(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(part(1), part(2))
    async with runtime_factory(spec=spec(1.0), parley_queue=False) as before:
        await before.engine.collect(story_turn("a dragon"))
        await before.engine.collect(story_turn("3", "p1"))
    # The process stopped before the window closed (no Delivery there to show the next part). A new one:
    after_delivery = MemoryDelivery("after")
    async with runtime_factory(spec=spec(1.0), parley_queue=False) as after:
        after.ops.deliveries.register("discord", after_delivery)
        (shown,) = await after_delivery.wait_for(1, within=10)
        assert "*➜ Talk to it* (1 vote)" in shown.text
        state = await after.engine.story.load(CHANNEL)  # type: ignore[union-attr]
        assert state is not None and state.round == 2
        assert "Part 1: the dragon wakes." in state.parts[0]


async def test_discord_players_vote_with_buttons(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.queue(part(1), part(2))
    async with bot_factory(spec=spec(2.0)):
        await fake.slash("story", {"prompt": "a dragon"})
        await fake.wait_for(lambda: any(fake.buttons(m) for m in fake.bot_messages()))
        ballot = next(m for m in fake.bot_messages() if fake.buttons(m))
        labels = [b["label"] for b in fake.buttons(ballot)]
        assert labels == ["1. Fly north", "2. Hide in the cave", "3. Talk to it"]
        ids = [b["custom_id"] for b in fake.buttons(ballot)]
        for who, button in (
            (fake.alice, ids[2]),
            (fake.bob, ids[2]),
            (fake.owner, ids[0]),
            (fake.alice, ids[2]),
        ):
            await fake.click(ballot, button, author=who)
        await fake.wait_for(
            lambda: any("➜ Talk to it* (3 votes)" in m["content"] for m in fake.bot_messages()), 15
        )
        # The round closed: the old part's buttons are taken off (part 2 brings its own).
        await fake.wait_for(lambda: not fake.buttons(fake.messages[ballot["id"]]))
    # Each click was answered privately, only to the voter.
    private = [m for m in fake.messages.values() if m["content"].startswith("Vote counted")]
    assert len(private) == 4 and all(m["flags"] & 64 for m in private)
    continuation = next(m for m in fake.bot_messages() if "➜ Talk to it" in m["content"])
    assert (
        continuation["channel_id"] == fake.general["id"]
    )  # a new channel message, not the spent interaction


async def test_slack_players_vote_with_block_kit_buttons(
    start_slack: StartSlack, runtime_factory: RuntimeFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(part(1), part(2))
    base = support_spec()
    story = base.config.story.model_copy(update={"branching": True, "vote_seconds": 2.0})
    story_spec = dataclasses.replace(base, config=base.config.model_copy(update={"story": story}))
    async with runtime_factory(spec=story_spec, parley_queue=False, **RUNTIME) as rt:
        app = await start_slack(runtime=rt)
        await app.sender.command(rq.slash_command("/story", "a dragon", response_url=slack.response_url()))
        await slack.wait_for(
            lambda: any(
                m.blocks and m.blocks[-1].get("block_id") == "parley_story"
                for m in slack.bot_messages("C0GENERAL")
            )
        )
        ballot = next(
            m
            for m in slack.bot_messages("C0GENERAL")
            if m.blocks and m.blocks[-1].get("block_id") == "parley_story"
        )
        buttons = ballot.blocks[-1]["elements"]
        values = [Choice.parse(b["value"]) for b in buttons]
        assert [(c.round, c.number) for c in values if c] == [(1, 1), (1, 2), (1, 3)]
        for user, n in (("U1", 2), ("U2", 2), ("U3", 1), ("U1", 2)):
            click = rq.block_action(
                f"parley_story_vote_{n}",
                buttons[n - 1]["value"],
                user=user,
                message_ts=ballot.ts,
                response_url=slack.response_url(),
            )
            await app.sender.action(click)

        def continued() -> bool:
            # Three people voted (U1 twice, counted once): 2 for "Hide", 1 for "Fly".
            return any(
                "➜ Hide in the cave" in m.shown and "(3 votes)" in m.shown for m in slack.bot_messages()
            )

        await slack.wait_for(continued, 15)
        await app.settle()
        # The round closed: the old part's buttons are gone (part 2 has its own).
        await slack.wait_for(lambda: not any(b.get("type") == "actions" for b in ballot.blocks))
    votes = [body for _, body in slack.responses if str(body.get("text", "")).startswith("Vote counted")]
    assert len(votes) == 4 and all(v["response_type"] == "ephemeral" for v in votes)


async def test_a_new_story_can_have_a_cover_picture(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    base = spec()
    story = base.config.story.model_copy(update={"cover": True})
    covered = dataclasses.replace(base, config=base.config.model_copy(update={"story": story}))
    fake_openai.queue(part(1))
    async with runtime_factory(spec=covered) as rt:
        first = await rt.engine.collect(story_turn("a sleepy dragon", place=Place("console", "local", "me")))
    (cover,) = first.attachments
    assert cover.data.startswith(b"\x89PNG") and cover.filename.startswith("story-cover-")
    assert "a sleepy dragon" in fake_openai.image_requests[0].body["prompt"]


async def test_discord_buttons_of_an_ended_or_other_story_change_nothing(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    """Issue 24 item 4: a button carries its story and round. Story A's old "1" while story B runs counts
    nothing in B; "2" on an ended story starts no story whose idea is "2". Both are answered privately."""
    fake = fake_discord
    fake_openai.queue(part(1), part(1), Reply("It ended well."))
    async with bot_factory(spec=spec(60.0)) as bot:
        await fake.slash("story", {"prompt": "a dragon"})
        await fake.wait_for(lambda: any(fake.buttons(m) for m in fake.bot_messages()))
        story_a = next(m for m in fake.bot_messages() if fake.buttons(m))
        old = [b["custom_id"] for b in fake.buttons(story_a)]
        await fake.slash("story", {"prompt": "a robot"})  # story B replaces A
        await fake.wait_for(
            lambda: any(fake.buttons(m) for m in fake.bot_messages() if m["id"] != story_a["id"]), 15
        )
        await fake.wait_for(lambda: not fake.buttons(fake.messages[story_a["id"]]))  # A's were taken off
        store = bot.runtime.engine.story
        assert store is not None
        place = Place("discord", fake.guild_id, fake.general["id"])
        b_state = await store.load(place)
        assert b_state is not None

        await fake.click(story_a, old[0], author=fake.bob)  # A's "1" while B runs
        await fake.wait_for(lambda: any("That vote has closed" in m["content"] for m in fake.bot_messages()))
        assert await store.tally(place, b_state.round) == (1, 0)  # nothing counted in B

        await fake.slash("story", {"prompt": "end"})
        await fake.wait_for(lambda: any("It ended well." in m["content"] for m in fake.bot_messages()), 15)
        asked = len(fake_openai.chat_requests)
        await fake.click(story_a, old[1], author=fake.alice)  # "2" on an ended story
        await fake.wait_for(
            lambda: sum("That vote has closed" in m["content"] for m in fake.bot_messages()) == 2
        )
        assert await store.load(place) is None  # no story started with the idea "2"
        assert len(fake_openai.chat_requests) == asked  # and no model call
    closed = [m for m in fake.messages.values() if m["content"].startswith("That vote has closed")]
    assert len(closed) == 2 and all(m["flags"] & 64 for m in closed)  # the clicker's eyes only


async def test_the_clock_wakes_for_a_new_vote_instead_of_polling(redis_client: aioredis.Redis) -> None:
    """A quiet clock waits (one Redis command per idle interval, here an hour); opening a vote wakes it, and
    it closes the window at its deadline."""
    store = StoryStore(redis_client, KeySpace("arcade"), ttl_seconds=60)
    dispatched: list[Turn] = []

    async def dispatch(turn: Turn, route: Route) -> None:
        dispatched.append(turn)

    clock = StoryClock(
        store, dispatch, lambda turn: Route("discord"), lambda _: True, interval=3600, idle_interval=3600
    )
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(clock.run())
        await asyncio.sleep(0.05)  # the first look: nothing due, the clock settles in for an hour
        deadline_ms = int(time.time() * 1000) + 200
        await store.save(CHANNEL, StoryState(1, ["Once."], ["a", "b"], deadline_ms, "", True))

        async def closed() -> bool:
            return await redis_client.zcard(store.due_key) == 0  # claimed: no job, so nothing dispatched

        await eventually(closed, within=10, what="the vote window closed")
        task.cancel()
    assert dispatched == []


async def test_a_discord_dm_story_has_one_reader_no_vote(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    """The adapter says the place is direct (Place.is_direct), and it survives the queue to the worker."""
    fake = fake_discord
    fake_openai.queue(part(1))
    async with bot_factory(spec=spec(2.0)) as bot:
        await fake.slash("story", {"prompt": "a dragon"}, dm=True)
        await fake.wait_for(lambda: any("What happens next?" in m["content"] for m in fake.bot_messages()))
        shown = next(m for m in fake.bot_messages() if "What happens next?" in m["content"])
        assert "Pick with `/story <number>`" in shown["content"] and "Vote" not in shown["content"]
        dm = fake.dm_channel_for(fake.alice)["id"]
        place = Place("discord", "@me", dm)
        state = await bot.runtime.engine.story.load(place)  # type: ignore[union-attr]
        assert state is not None and not state.voting


async def test_a_slack_dm_story_has_one_reader_no_vote(
    start_slack: StartSlack, runtime_factory: RuntimeFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(part(1))
    base = support_spec()
    story = base.config.story.model_copy(update={"branching": True, "vote_seconds": 2.0})
    story_spec = dataclasses.replace(base, config=base.config.model_copy(update={"story": story}))
    async with runtime_factory(spec=story_spec, parley_queue=False, **RUNTIME) as rt:
        app = await start_slack(runtime=rt)
        command = rq.slash_command("/story", "a dragon", channel="D0DM", response_url=slack.response_url())
        await app.sender.command(command)
        await slack.wait_for(lambda: any("What happens next?" in m.shown for m in slack.bot_messages("D0DM")))
        await app.settle()
        shown = next(m for m in slack.bot_messages("D0DM") if "What happens next?" in m.shown)
        assert "Pick with" in shown.shown and "Vote" not in shown.shown
        state = await rt.engine.story.load(Place("slack", "T0001", "D0DM"))  # type: ignore[union-attr]
        assert state is not None and not state.voting
