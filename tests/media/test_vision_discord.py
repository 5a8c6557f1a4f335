"""Images in on Discord: an attachment reaches a vision persona as an image part, after moderation; a
text-only persona says so without an LLM call; memory keeps a reference, never the bytes."""

from __future__ import annotations

from core.types import Place
from tests.discord.conftest import BotFactory
from tests.fakes.discord import FakeDiscord
from tests.fakes.images import decode_data_url, png
from tests.fakes.openai_server import FakeOpenAI, last_user_text

POST_MESSAGE = r"/channels/\d+/messages"


def general(fake: FakeDiscord) -> Place:
    return Place("discord", fake.guild_id, fake.general["id"])


async def stored(bot: object, place: Place) -> list[str]:
    rt = bot.runtime  # type: ignore[attr-defined]
    return list(await rt.redis.lrange(rt.keys.messages(place), 0, -1))


async def test_an_image_reaches_a_vision_persona(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    picture = png(rgb=(10, 200, 30))
    async with bot_factory() as bot:  # arcade's default persona, host, has vision = true
        await fake.send_message(
            "what colour is this?",
            mention_bot=True,
            attachments=[("green.png", picture, "image/png")],
        )
        await fake.wait_for(lambda: fake.bot_messages() and "image" in fake.bot_messages()[-1]["content"])
        await fake.wait_for(lambda: fake.bot_messages()[-1]["content"].endswith("[1 image(s)]"))
        memory = await stored(bot, general(fake))
    (url,) = fake_openai.image_inputs()
    assert url.startswith("data:image/png;base64,")
    assert decode_data_url(url) == picture  # the very bytes the user attached
    assert "what colour is this?" in last_user_text(fake_openai.chat_requests[-1].body)
    # The image was moderated before the model saw it: an image input went to /v1/moderations first.
    image_checks = [
        r
        for r in fake_openai.moderation_requests
        if isinstance(r.body.get("input"), list) and r.body["input"][0].get("type") == "image_url"
    ]
    assert image_checks and image_checks[0].at < fake_openai.chat_requests[-1].at
    # Memory: the words and a reference to the image, never its bytes.
    user_line = next(m for m in memory if "what colour is this?" in m)
    assert "[image: green.png id " in user_line
    assert not any("base64" in m for m in memory)


async def test_a_text_only_persona_says_so_politely(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    async with bot_factory() as bot:
        rt = bot.runtime
        await rt.engine.memory.set_meta(general(fake), {"persona": "pirate"})
        no_vision = rt.bot.personas["pirate"].no_vision
        assert not rt.bot.personas["pirate"].vision
        await fake.send_message("", mention_bot=True, attachments=[("map.png", png(), "image/png")])
        await fake.wait_for(lambda: fake.bot_messages() and fake.bot_messages()[-1]["content"] == no_vision)
    assert fake_openai.chat_requests == []  # no LLM call for the image
    assert fake.cdn_downloads == []  # and it was not even downloaded


async def test_a_text_only_persona_still_answers_the_words(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    async with bot_factory() as bot:
        await bot.runtime.engine.memory.set_meta(general(fake), {"persona": "pirate"})
        no_vision = bot.runtime.bot.personas["pirate"].no_vision
        await fake.send_message("ahoy", mention_bot=True, attachments=[("map.png", png(), "image/png")])
        await fake.wait_for(lambda: any("You said: ahoy" in m["content"] for m in fake.bot_messages()))
        await fake.wait_for(lambda: any(m["content"] == no_vision for m in fake.bot_messages()))
    assert fake_openai.image_inputs() == []  # the words went to the model, the image did not


async def test_a_flagged_image_is_refused_before_the_model_sees_it(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.flagged_image_markers.add(b"NSFW-MARKER")
    async with bot_factory() as bot:
        refusal = bot.runtime.bot.personas["host"].refusal
        await fake.send_message(
            "look", mention_bot=True, attachments=[("x.png", png(text=b"NSFW-MARKER"), "image/png")]
        )
        await fake.wait_for(lambda: fake.bot_messages() and fake.bot_messages()[-1]["content"] == refusal)
    assert fake_openai.chat_requests == []


async def test_a_file_that_is_not_an_image_is_not_looked_at(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    async with bot_factory():
        # Declared image/png, but the bytes are not a picture: the sniffed type decides.
        await fake.send_message(
            "see?", mention_bot=True, attachments=[("fake.png", b"<html>nope</html>", "image/png")]
        )
        await fake.wait_for(
            lambda: fake.bot_messages() and "I can only look at" in fake.bot_messages()[-1]["content"]
        )
    assert fake_openai.chat_requests == []
