"""Benchmark, not a test (pytest collects only ``test_*.py``): how far apart two processes' IDENTIFYs in one
rate-limit bucket land, with the window shortened to 1 s (5 s on Discord). A figure, printed: it should be
about the window (>= 0.95 s), and is a timing, so it has no place in the suite.

    .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/discord/bench_identify.py
"""

from __future__ import annotations

from tests.discord.conftest import BotFactory
from tests.fakes.discord import FakeDiscord


async def test_bench_identifies_in_one_bucket_are_spaced_a_window_apart(
    bot_factory: BotFactory, fake_discord: FakeDiscord
) -> None:
    async with (
        bot_factory(queue=False, shard_count=2, shard_ids=[0], identify_window=1.0),
        bot_factory(queue=False, shard_count=2, shard_ids=[1], identify_window=1.0),
    ):
        first, second = sorted(i.at for i in fake_discord.identifies)
    print(f"\nIDENTIFY spacing in one bucket (window 1.0 s): {second - first:.3f} s")
