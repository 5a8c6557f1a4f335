"""Fixtures for the safety suite: the shared fake OpenAI server with per-category moderation scores, bot specs
with edited ``[moderation]`` / ``[limits]`` / ``[access]`` tables, and a dump of everything in Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from bots.loader import load_bot
from core.bot import BotSpec
from core.runtime import Runtime, open_runtime
from core.safety.settings import SafetySettings
from core.types import Turn
from tests.conftest import make_app, make_settings
from tests.core.helpers import make_turn as base_make_turn
from tests.fakes.openai_server import MODERATION_CATEGORIES, Error, FakeOpenAI, Hang

CORPUS = Path(__file__).parent / "corpus"


class ModerationFake(FakeOpenAI):
    """The shared fake, with ``scores = {"word": ("category", score)}``: input containing the word gets that
    score (the base fake only knows ``flagged_words`` -> harassment 0.97). ``verdicts_held``: an event the
    moderation answers wait for (what happens while a verdict is pending)."""

    def __init__(self) -> None:
        super().__init__()
        self.scores: dict[str, tuple[str, float]] = {}
        self.verdicts_held: asyncio.Event | None = None  # set: moderation answers wait until it is set

    async def _moderations(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        if self.verdicts_held is not None:
            await self.verdicts_held.wait()
        behaviour = self.moderation_behaviour
        if isinstance(behaviour, Hang):
            await asyncio.sleep(behaviour.seconds)
        if isinstance(behaviour, Error):
            return self._error(behaviour)
        inputs = body.get("input", "")
        results = []
        for item in inputs if isinstance(inputs, list) else [inputs]:
            text = str(item).lower()
            scores = dict.fromkeys(MODERATION_CATEGORIES, 0.001)
            for word in self.flagged_words:
                if word.lower() in text:
                    scores["harassment"] = 0.97
            for word, (category, score) in self.scores.items():
                if word.lower() in text:
                    scores[category] = max(scores[category], score)
            categories = {c: s >= 0.5 for c, s in scores.items()}
            results.append(
                {
                    "flagged": any(categories.values()),
                    "categories": categories,
                    "category_scores": scores,
                    "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
                }
            )
        return web.json_response({"id": "modr-fake", "model": body.get("model"), "results": results})


@pytest.fixture
async def fake_openai() -> AsyncIterator[ModerationFake]:
    async with ModerationFake() as fake:
        yield fake


def edit_spec(bot: str | BotSpec, **tables: dict[str, Any]) -> BotSpec:
    """A shipped bot with some tables changed: ``edit_spec("arcade", limits={"user_rate": []})``."""
    spec = load_bot(bot) if isinstance(bot, str) else bot
    config = spec.config
    updates = {}
    for name, values in tables.items():
        current = getattr(config, name)
        updates[name] = type(current).model_validate({**current.model_dump(), **values})
    return replace(spec, config=config.model_copy(update=updates))


NO_LIMITS: dict[str, Any] = {
    "user_rate": [],
    "channel_rate": [],
    "user_daily_tokens": 0,
    "workspace_daily_tokens": 0,
    "max_concurrent_per_workspace": 0,
}


def make_turn(text: str, **fields: Any) -> Turn:
    """A turn as Slack would bring it (platform slack, workspace T1, channel C1) unless told otherwise."""
    return base_make_turn(text, **{"platform": "slack", "workspace": "T1", "channel": "C1", **fields})


SafetyFactory = Callable[..., AbstractAsyncContextManager[Runtime]]


@pytest.fixture
def safety_factory(redis_url: str, fake_openai: ModerationFake, tmp_path: Path) -> SafetyFactory:
    """``async with safety_factory("support", moderation={...}, limits={...}, env={...}) as rt:`` a real
    runtime (real Redis, the fake OpenAI server) with edited tables and explicit safety settings."""

    @asynccontextmanager
    async def factory(
        bot: str | BotSpec = "arcade", *, env: dict[str, Any] | None = None, **tables: dict[str, Any]
    ) -> AsyncIterator[Runtime]:
        settings = make_settings(
            redis_url=redis_url,
            openai_base_url=fake_openai.base_url,
            openai_api_key="test-key",
            parley_data_dir=tmp_path / "data",
        )
        safety = SafetySettings(_env_file=None, **(env or {}))  # type: ignore[call-arg]
        async with open_runtime(edit_spec(bot, **tables), make_app(settings, safety=safety)) as rt:
            yield rt

    return factory


async def redis_dump(client: aioredis.Redis) -> dict[str, str]:
    """Every key (found by SCAN) and a text rendering of its value, whatever its type."""
    out: dict[str, str] = {}
    async for key in client.scan_iter(count=500):
        kind = await client.type(key)
        if kind == "string":
            value: Any = await client.get(key)
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        elif kind == "hash":
            value = await client.hgetall(key)
        elif kind == "set":
            value = sorted(await client.smembers(key))
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = await client.xrange(key)
        else:
            value = kind
        out[key] = json.dumps(value, ensure_ascii=False, default=str)
    return out


def sent_texts(fake: FakeOpenAI) -> list[str]:
    """Every message content of every chat request the LLM received."""
    return [m["content"] for r in fake.chat_requests for m in r.body["messages"]]
