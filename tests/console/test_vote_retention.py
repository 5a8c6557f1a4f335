"""A Slack 👍/👎 lands on the console's daily aggregates with the console's retention, not the default."""

from __future__ import annotations

import time

from adapters.common.deps import EdgeDeps
from adapters.slack.delivery import SlackDelivery
from adapters.slack.translate import Feedback
from core.console.stats import day_of
from tests.console.conftest import ServeConsole
from tests.core.helpers import make_turn
from tests.fakes.slack import FakeSlack
from tests.slack.conftest import bot_config, slack_settings


async def test_a_slack_vote_keeps_the_consoles_retention(
    serve_console: ServeConsole, slack: FakeSlack
) -> None:
    served = await serve_console(parley_console_retention_days=7)
    rt = served.runtime
    delivery = SlackDelivery(EdgeDeps.of(rt), slack_settings(slack), bot_config())
    try:
        turn = make_turn("hello", user="U1", platform="slack", workspace="T1", channel="C1", thread="1.1")
        vote = Feedback(turn_id=turn.turn_id, vote="up", user_id="U1", place=turn.place, message_ts="1.2")
        assert await delivery.state.record_feedback(vote)
        ttl = await rt.redis.ttl(rt.keys.scoped("console", "day", day_of(time.time())))
        assert 0 < ttl <= 7 * 86_400  # was 35 days: the vote reset the day's expiry to the default
    finally:
        await delivery.aclose()
