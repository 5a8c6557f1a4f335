"""Issue 20, finding 6 and 12: image quotas are reserved atomically before the picture is asked for and given
back when none came; a flagged prompt never reaches the Images API on any profile."""

from __future__ import annotations

import asyncio
import dataclasses

import redis.asyncio as aioredis

from bots.loader import load_bot
from core.bot import BotSpec
from core.keys import KeySpace
from core.safety.reserve import QuotaSpec, Reserver
from core.types import CommandCall, ReplyDone, ReplyKind, ReplyResult
from tests.conftest import RuntimeFactory
from tests.core.helpers import make_turn
from tests.fakes.openai_server import Error, FakeOpenAI


def imagining(spec: BotSpec, **images: object) -> BotSpec:
    limits = spec.config.limits.model_copy(update={"exempt_platforms": [], "exempt_admins": False})
    cfg = spec.config.model_copy(
        update={
            "images": spec.config.images.model_copy(update=images),
            "commands": [*spec.config.commands, "imagine"],
            "limits": limits,
        }
    )
    return dataclasses.replace(spec, config=cfg)


async def _imagine(rt: object, prompt: str, *, user: str = "u1", channel: str = "c1") -> ReplyResult:
    turn = make_turn(f"/imagine {prompt}", user=user, channel=channel, command=CommandCall("imagine", prompt))
    result = None
    async for event in rt.engine.reply(turn):  # type: ignore[attr-defined]
        if isinstance(event, ReplyDone):
            result = event.result
    assert result is not None
    return result


async def test_the_reserve_script_grants_exactly_the_limit_under_concurrency(
    redis_client: aioredis.Redis,
) -> None:
    reserver = Reserver(redis_client)
    spec = QuotaSpec(KeySpace("t20").scoped("reserve", "race"), limit=10, ttl_seconds=60)
    got = await asyncio.gather(*(reserver.reserve(spec) for _ in range(100)))
    granted = [r for r in got if r.granted]
    assert len(granted) == 10
    assert 0 < granted[0].retry_ms <= 60_000
    for r in granted[:4]:
        await reserver.release(r)
    assert int(await redis_client.get(spec.key)) == 6
    # Releasing more than is counted never goes below zero nor creates a key.
    for r in granted:
        await reserver.release(r)
    assert await redis_client.get(spec.key) is None
    # All or nothing: a refused second quota gives the first one back.
    full = QuotaSpec(KeySpace("t20").scoped("reserve", "full"), limit=1, ttl_seconds=60)
    assert (await reserver.reserve(full)).granted
    held = await reserver.reserve_all([spec, full])
    assert not held.granted and held.refused is not None and held.refused.spec is full
    assert await redis_client.get(spec.key) is None


async def test_parallel_imagine_requests_cannot_overshoot_the_quota(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    gate = fake_openai.images_gate = asyncio.Event()
    async with runtime_factory(spec=imagining(load_bot("arcade"), user_daily=10, workspace_daily=12)) as rt:
        tasks = [asyncio.create_task(_imagine(rt, f"a kite {i}", channel=f"c{i}")) for i in range(18)]
        refused: list[ReplyResult] = []

        async def settled() -> None:
            while len(fake_openai.image_requests) + len(refused) < 18:
                done = [t for t in tasks if t.done()]
                refused[:] = [t.result() for t in done]
                await asyncio.sleep(0.01)

        await asyncio.wait_for(settled(), 30)
        gate.set()
        results = await asyncio.gather(*tasks)
    made = [r for r in results if r.attachments]
    assert len(made) == 10
    assert len(fake_openai.image_requests) == 10
    assert sum("That's your 10 images for today" in r.text for r in results) == 8


async def test_a_failed_picture_gives_its_quota_back(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    async with runtime_factory(spec=imagining(load_bot("arcade"), user_daily=2)) as rt:
        fake_openai.images_behaviour = Error(500, "boom")
        for i in range(3):
            failed = await _imagine(rt, f"a boat {i}")
            assert failed.meta["reason"] == "image_failed"
        fake_openai.images_behaviour = None
        assert (await _imagine(rt, "a boat")).attachments
        assert (await _imagine(rt, "a boat")).attachments
        over = await _imagine(rt, "a boat")
    assert "That's your 2 images for today" in over.text


async def test_a_flagged_prompt_is_refused_before_any_image_call_on_a_relaxed_profile(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.flagged_words.add("grim thing")  # harassment: arcade's relaxed profile flags, not refuses
    async with runtime_factory(spec=imagining(load_bot("arcade"))) as rt:
        result = await _imagine(rt, "a grim thing")
        refusal = rt.bot.personas[result.persona].refusal
    assert fake_openai.image_requests == []
    assert result.flag and result.meta["reason"] == "image_prompt_flagged"
    assert result.text == refusal and not result.attachments
    assert result.kind in (ReplyKind.COMMAND, ReplyKind.REFUSAL)
