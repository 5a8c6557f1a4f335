"""Short real audio files made on the spot (no files, no downloads): a WAV tone of a chosen length.

The fake speech API answers with one; tests send one as a voice message or clip."""

from __future__ import annotations

import io
import math
import struct
import wave


def wav(seconds: float = 0.5, *, rate: int = 8_000, hz: float = 440.0) -> bytes:
    """A mono 16-bit PCM WAV of a sine tone: a file any player (and sox) opens."""
    frames = int(seconds * rate)
    samples = b"".join(
        struct.pack("<h", int(12_000 * math.sin(2 * math.pi * hz * i / rate))) for i in range(frames)
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples)
    return out.getvalue()
