"""The gateway half of the fake Discord: one websocket session speaking Discord's gateway protocol (v10).

Opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes):
0 DISPATCH, 1 HEARTBEAT, 2 IDENTIFY, 6 RESUME, 7 RECONNECT, 9 INVALID_SESSION, 10 HELLO, 11 HEARTBEAT_ACK.

Compression follows what discord.py asks for in the URL: ``compress=zlib-stream`` means one zlib stream per
connection, every frame ending with the ``Z_SYNC_FLUSH`` suffix ``00 00 ff ff``; ``zstd-stream`` (used by
discord.py when ``zstandard`` is installed) means one zstd stream flushed per frame.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, RESUME, RECONNECT, MEMBERS = 0, 1, 2, 3, 6, 7, 8
INVALID_SESSION, HELLO, HEARTBEAT_ACK = 9, 10, 11

# Intent bits (https://discord.com/developers/docs/events/gateway#gateway-intents)
GUILDS = 1 << 0
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15


class _Compressor(Protocol):
    def __call__(self, raw: bytes) -> bytes: ...


def _zlib_stream() -> _Compressor:
    stream = zlib.compressobj()

    def compress(raw: bytes) -> bytes:
        return stream.compress(raw) + stream.flush(zlib.Z_SYNC_FLUSH)

    return compress


def _zstd_stream() -> _Compressor:
    import zstandard  # only when discord.py asks for zstd (it does when zstandard is installed)

    stream = zstandard.ZstdCompressor().compressobj()

    def compress(raw: bytes) -> bytes:
        return bytes(stream.compress(raw) + stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))

    return compress


@dataclass
class Identify:
    """What a client sent in IDENTIFY."""

    token: str
    intents: int
    shard: tuple[int, int]
    at: float


@dataclass
class GatewaySession:
    ws: web.WebSocketResponse
    compress: _Compressor | None
    session_id: str = ""
    shard: tuple[int, int] = (0, 1)
    intents: int = 0
    seq: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    heartbeats: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def has(self, intent: int) -> bool:
        return bool(self.intents & intent)

    async def send(self, payload: dict[str, Any]) -> None:
        async with self._lock:  # one compression stream: frames must leave in order
            if payload.get("op") == DISPATCH:
                self.seq += 1
                payload = {**payload, "s": self.seq}
            raw = json.dumps(payload, separators=(",", ":")).encode()
            if self.ws.closed:
                return
            if self.compress is None:
                await self.ws.send_str(raw.decode())
            else:
                await self.ws.send_bytes(self.compress(raw))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        await self.send({"op": DISPATCH, "t": event, "d": data})


def shard_of(guild_id: str | int, shard_count: int) -> int:
    return (int(guild_id) >> 22) % shard_count


def compressor_for(query: dict[str, str]) -> _Compressor | None:
    mode = query.get("compress", "")
    if mode == "zlib-stream":
        return _zlib_stream()
    if mode == "zstd-stream":
        return _zstd_stream()
    if mode:
        raise web.HTTPBadRequest(text=f"unknown compression {mode!r}")
    return None


def now() -> float:
    return time.monotonic()
