"""Core tests exercise the engine, not the abuse limits: their runtimes run with limits off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bots.loader import load_bot
from core.bot import BotSpec
from core.runtime import Runtime
from tests.conftest import RuntimeFactory, without_limits


@pytest.fixture
def runtime_factory(runtime_factory: RuntimeFactory) -> RuntimeFactory:
    @asynccontextmanager
    async def factory(
        bot: str = "arcade", *, spec: BotSpec | None = None, **kw: Any
    ) -> AsyncIterator[Runtime]:
        async with runtime_factory(bot, spec=without_limits(spec or load_bot(bot)), **kw) as rt:
            yield rt

    return factory
