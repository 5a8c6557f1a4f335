"""Small PNGs made on the spot (no files, no downloads): for image attachments and the fake Images API.

``png(text=b"...")`` adds a ``tEXt`` chunk, so a test can mark an image (the fake moderation endpoint flags
images whose bytes hold one of its ``flagged_image_markers``).
"""

from __future__ import annotations

import base64
import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png(
    width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (200, 80, 40), text: bytes = b""
) -> bytes:
    row = b"\x00" + bytes(rgb) * width
    raw = zlib.compress(row * height)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    extra = _chunk(b"tEXt", b"Comment\x00" + text) if text else b""
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + _chunk(b"IDAT", raw) + _chunk(b"IEND", b"")
    )


def decode_data_url(url: str) -> bytes:
    """The bytes of a ``data:...;base64,`` URL (b"" for anything else)."""
    if not url.startswith("data:") or ";base64," not in url:
        return b""
    return base64.b64decode(url.split(";base64,", 1)[1])
