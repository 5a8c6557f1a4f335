"""core/starts.py: at most N turns in their first stages at once, a bounded wait, releases that are safe
to repeat (no Redis, no timings)."""

from __future__ import annotations

import asyncio

from core.starts import Starts


async def test_at_most_size_places_and_the_next_turn_gets_a_released_one() -> None:
    starts = Starts(2, max_wait=30.0)
    first, second = await starts.enter(), await starts.enter()
    third = asyncio.create_task(starts.enter())
    await asyncio.sleep(0)
    assert not third.done()  # both places are held
    first()
    first()  # a second release of the same place gives back nothing more
    release = await third
    fourth = asyncio.create_task(starts.enter())
    await asyncio.sleep(0)
    assert not fourth.done()
    second()
    release()
    (await fourth)()


async def test_a_turn_goes_on_without_a_place_after_the_longest_wait() -> None:
    starts = Starts(1, max_wait=0.01)
    held = await starts.enter()
    without = await starts.enter()  # waited max_wait: goes on, holding nothing
    without()
    held()
    again = await starts.enter()  # the one real place is free again (the no-op release gave back none)
    assert starts._places is not None and starts._places.locked()
    again()


async def test_size_zero_never_waits() -> None:
    starts = Starts(0)
    releases = [await starts.enter() for _ in range(100)]
    for release in releases:
        release()
