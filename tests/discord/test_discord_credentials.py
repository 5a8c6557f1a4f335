"""Discord interaction tokens are sealed in Redis (PARLEY_CREDENTIALS_KEYS) and still answer the command."""

from __future__ import annotations

from cryptography.fernet import Fernet

from adapters.discord.route import interaction_token_key
from bots.loader import load_bot
from tests.conftest import single_shot_story
from tests.discord.conftest import BotFactory
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply

KEY = Fernet.generate_key().decode()


async def test_the_interaction_token_is_encrypted_at_rest(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.queue(Reply("A short tale of a sealed token.", chunk_chars=8, delay=0.05))
    spec = single_shot_story(load_bot("arcade"))  # one reply, no vote buttons
    async with bot_factory(spec=spec, runtime_settings={"parley_credentials_keys": KEY}) as bot:
        interaction = await fake.slash("story", {"prompt": "a sealed token"})
        state = fake.interactions[interaction["id"]]
        await fake.wait_for(
            lambda: (
                fake.messages.get(state.original_id or "", {}).get("content")
                == "A short tale of a sealed token."
            )
        )
        stored = await bot.runtime.redis.get(interaction_token_key(bot.runtime.keys, int(interaction["id"])))
    assert stored is not None and stored.startswith("enc1:")
    assert interaction["token"] not in stored
    opened = Fernet(KEY.encode()).decrypt(stored.removeprefix("enc1:").encode()).decode()
    assert opened == interaction["token"]
