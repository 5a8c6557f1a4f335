"""A Slack 👍/👎 lands on the console's daily aggregates with the console's retention, not the default."""

from __future__ import annotations

import time
from pathlib import Path

from adapters.common.deps import EdgeDeps
from adapters.slack.delivery import SlackDelivery
from adapters.slack.translate import Feedback
from bots.loader import load_bot
from core.console.stats import day_of
from core.runtime import open_runtime
from tests.conftest import make_app, make_settings
from tests.console.conftest import console_settings
from tests.core.helpers import make_turn
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack import FakeSlack
from tests.slack.conftest import bot_config, slack_settings


async def test_a_slack_vote_keeps_the_consoles_retention(
    redis_url: str, fake_openai: FakeOpenAI, slack: FakeSlack, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_url=redis_url,
        openai_base_url=fake_openai.base_url,
        openai_api_key="k",
        parley_data_dir=tmp_path,
    )
    console = console_settings(parley_console_retention_days=7)
    async with open_runtime(load_bot("support"), make_app(settings, console=console)) as rt:
        delivery = SlackDelivery(EdgeDeps.of(rt), slack_settings(slack), bot_config())
        try:
            turn = make_turn("hi", user="U1", platform="slack", workspace="T1", channel="C1", thread="1.1")
            vote = Feedback(turn_id=turn.turn_id, vote="up", user_id="U1", place=turn.place, message_ts="1.2")
            assert await delivery.state.record_feedback(vote)
            ttl = await rt.redis.ttl(rt.keys.scoped("console", "day", day_of(time.time())))
        finally:
            await delivery.aclose()
    assert 0 < ttl <= 7 * 86_400  # was 35 days: the vote reset the day's expiry to the default
