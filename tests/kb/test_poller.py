"""The index is decoded off the event loop."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.kb.store import KbStore
from core.keys import KeySpace
from tests.kb.conftest import run_ingest


async def test_the_index_is_decoded_off_the_event_loop(
    redis_client: aioredis.Redis, help_centre: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await run_ingest(redis_client, help_centre.parent)
    loop_thread = threading.get_ident()
    decoded_on: list[int] = []
    real = base64.b64decode

    def watched(*args: object, **kwargs: object) -> bytes:
        decoded_on.append(threading.get_ident())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(base64, "b64decode", watched)
    index = await KbStore(redis_client, KeySpace("testbot")).load()
    assert index is not None and index.size
    assert decoded_on and loop_thread not in decoded_on  # was: decoded on the loop, blocking every turn
