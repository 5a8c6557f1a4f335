"""Audio: speech out (``/speak``, narrated ``/story`` parts) and voice messages in (transcribed).

Speech out::

    text (moderated: a /speak argument by the command stage, a story part by the final output check)
      -> per-user and per-server daily speech quotas, reserved before the call, given back on failure
      -> the speech API (``audio.speech`` on PARLEY_TTS_BASE_URL, else OPENAI_BASE_URL)
         or, when that server has none (404/405/501) or no endpoint is set, a local espeak-ng if installed
      -> an audio file the Delivery uploads beside the text (:class:`~core.types.Attachment`)

Speech in::

    a voice message / audio clip (declared type, size and length checked first)
      -> clip quotas reserved -> download (size cap, type sniffed from the bytes, length read where the
         format says it) -> the transcription API (``audio.transcriptions``) -> the transcript is the turn's
         text: quoted back to the user, moderated like typed text, remembered with a reference to the clip
         (never the audio)

Audio is logged by its id, byte size and duration only, never its words.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import openai
import redis.asyncio as aioredis
import structlog

from core.bot import AudioConfig, LimitsConfig
from core.commands import Command
from core.errors import AudioUnsupported, ImageRejected, MediaError, StoreError
from core.keys import KeySpace
from core.media.fetch import ImageFetcher
from core.net.tls import http_client
from core.safety.limits import user_tag
from core.safety.reserve import QuotaSpec, Reserver
from core.safety.reserve import Reservation as Reserved
from core.types import DIRECT_WORKSPACE, Attachment, AudioRef, CommandCall, ImageRef, Turn

if TYPE_CHECKING:
    from core.context import TurnContext

log = structlog.get_logger("parley.audio")

UNSUPPORTED_STATUSES = frozenset({404, 405, 501})
EXT = {"audio/mpeg": "mp3", "audio/ogg": "ogg", "audio/wav": "wav", "audio/flac": "flac", "audio/mp4": "m4a"}
NO_SPEECH = (
    "I can't speak here: the model server has no speech API and no local speech engine is installed. "
    "(Admins: set PARLEY_TTS_BASE_URL to a server with /v1/audio/speech, or install espeak-ng.)"
)
NO_TRANSCRIPTION = (
    "I can't listen to audio here: the model server has no transcription API. (Admins: set "
    "PARLEY_TTS_BASE_URL to a server with /v1/audio/transcriptions, or set [audio] listen = false.)"
)
FAILED = "Sorry, the recording didn't come out. Please try again in a moment."


# -- what the bytes are --------------------------------------------------------------------------------


def sniff_audio(data: bytes) -> str:
    """The audio type the bytes really are ("" when none we know): a declared type is not trusted."""
    if data[:4] == b"OggS":
        return "audio/ogg"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:4] == b"fLaC":
        return "audio/flac"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "audio/webm"
    if data[4:8] == b"ftyp":
        return "audio/mp4"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    return ""


def duration_of(data: bytes, mime: str) -> float | None:
    """Seconds, where the format says it cheaply (WAV header, OGG's last granule position); else None."""
    if mime == "audio/wav" and len(data) >= 44:
        pos = 12
        rate = channels = bits = 0
        while pos + 8 <= len(data):
            tag, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
            if tag == b"fmt " and pos + 24 <= len(data):
                channels, rate = struct.unpack("<HI", data[pos + 10 : pos + 16])
                bits = struct.unpack("<H", data[pos + 22 : pos + 24])[0]
            elif tag == b"data" and rate and channels and bits:
                return float(size / (rate * channels * bits / 8))
            pos += 8 + size + (size & 1)
        return None
    if mime == "audio/ogg":
        last = data.rfind(b"OggS")
        if last < 0 or last + 14 > len(data):
            return None
        granule = struct.unpack("<q", data[last + 6 : last + 14])[0]
        rate = 48_000 if b"OpusHead" in data[:200] else _vorbis_rate(data)
        return granule / rate if granule > 0 and rate else None
    return None


def _vorbis_rate(data: bytes) -> int:
    at = data.find(b"\x01vorbis")
    return struct.unpack("<I", data[at + 12 : at + 16])[0] if at >= 0 and at + 16 <= len(data) else 0


# -- quotas: reserved before the work, given back on failure ---------------------------------------


@dataclass
class Reservation:
    """Units held for one piece of audio work; ``release()`` gives them back when the work failed."""

    taken: list[Reserved]
    reserver: Reserver

    async def release(self) -> None:
        try:
            await self.reserver.release_all(self.taken)
        except StoreError as exc:  # best effort: the counter expires with its window anyway
            log.warning("audio_quota_not_released", error=str(exc))


class AudioQuotas:
    """Daily counts per user and per server for speech made and clips heard, on the shared reserve script
    (core/safety/reserve.py): a unit is taken before the work (parallel requests cannot overshoot) and given
    back if the work fails."""

    def __init__(
        self, client: aioredis.Redis, keys: KeySpace, cfg: AudioConfig, limits: LimitsConfig
    ) -> None:
        self.reserver = Reserver(client)
        self.keys = keys
        self.cfg = cfg
        self.limits = limits

    def _specs(self, turn: Turn, kind: str) -> list[QuotaSpec]:
        cfg, place = self.cfg, turn.place
        user_limit, server_limit = (
            (cfg.user_daily_speech, cfg.workspace_daily_speech)
            if kind == "speech"
            else (cfg.user_daily_clips, cfg.workspace_daily_clips)
        )
        ttl = cfg.quota_window_seconds
        specs = []
        if user_limit:
            who = user_tag(place.platform, turn.author.id)
            specs.append(
                QuotaSpec(self.keys.scoped("audio", kind, "user", who), user_limit, ttl, label="your")
            )
        # Direct messages have no server: their server-wide budget is the user's own (never one shared "@me").
        if server_limit and place.workspace not in {DIRECT_WORKSPACE, ""}:
            key = self.keys.scoped("audio", kind, "server", f"{place.platform}:{place.workspace}")
            specs.append(QuotaSpec(key, server_limit, ttl, label="this server's"))
        return specs

    async def reserve(self, turn: Turn, kind: str) -> Reservation | str:
        """A reservation, or the sentence telling the user which quota is used up."""
        lim = self.limits
        exempt = turn.place.platform in lim.exempt_platforms or (lim.exempt_admins and turn.author.is_admin)
        held = await self.reserver.reserve_all([] if exempt else self._specs(turn, kind))
        if held.refused is not None:
            what = "recordings" if kind == "speech" else "voice messages"
            spec = held.refused.spec
            return f"That's {spec.label} {spec.limit} {what} for today. More tomorrow (UTC)."
        return Reservation(held.taken, self.reserver)


# -- the two APIs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Speech:
    id: str
    mime: str
    ext: str
    data: bytes = field(repr=False)


class AudioClient:
    """``audio.speech`` and ``audio.transcriptions`` on one ``openai.AsyncOpenAI``; espeak-ng as the local
    fallback for speech. ``aclose()`` is idempotent."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        speech_model: str,
        transcribe_model: str,
        cfg: AudioConfig,
        local_engine: str | None = None,
    ) -> None:
        self.base_url = base_url or "https://api.openai.com/v1"
        self.configured = bool(base_url) or api_key != "not-needed"
        self.speech_model = speech_model
        self.transcribe_model = transcribe_model
        self.cfg = cfg
        self.local_engine = local_engine if local_engine is not None else (shutil.which("espeak-ng") or "")
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=openai.Timeout(cfg.timeout_seconds, connect=5.0),
            max_retries=1,
            http_client=http_client(base_url),
        )
        self._no_speech_api = not self.configured  # learnt on the first 404: go local from then on
        self._closed = False

    async def speak(self, text: str, voice: str) -> Speech:
        speech_id = uuid.uuid4().hex[:16]
        started = time.perf_counter()
        fmt = self.cfg.format
        if not self._no_speech_api:
            try:
                async with asyncio.timeout(self.cfg.timeout_seconds):
                    response = await self._client.audio.speech.create(
                        model=self.speech_model, voice=voice, input=text, response_format=fmt
                    )
                data = response.content
                engine = "api"
            except TimeoutError:
                raise MediaError(f"no speech within {self.cfg.timeout_seconds:g}s") from None
            except openai.APIStatusError as exc:
                if exc.status_code not in UNSUPPORTED_STATUSES:
                    raise MediaError(f"the speech API refused the request (HTTP {exc.status_code})") from None
                self._no_speech_api = True
                log.warning("speech_api_missing", base_url=self.base_url, status=exc.status_code)
            except openai.OpenAIError as exc:
                raise MediaError(f"the speech API failed ({type(exc).__name__})") from None
        if self._no_speech_api:
            data, engine = await self._local(text), "espeak-ng"
        mime = sniff_audio(data)
        if not mime:
            raise MediaError("the speech API returned something that is not audio")
        log.info(
            "speech_made",
            speech=speech_id,
            engine=engine,
            bytes=len(data),
            seconds=duration_of(data, mime),
            ms=round((time.perf_counter() - started) * 1000),
        )
        return Speech(speech_id, mime, EXT.get(mime, "audio"), data)

    async def _local(self, text: str) -> bytes:
        if not self.local_engine:
            raise AudioUnsupported(f"no speech API at {self.base_url} and no espeak-ng installed")
        proc = await asyncio.create_subprocess_exec(
            self.local_engine,
            "--stdout",
            "--",
            text,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(self.cfg.timeout_seconds):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise MediaError("the local speech engine took too long") from None
        if proc.returncode != 0 or not out:
            raise MediaError(f"the local speech engine failed (exit {proc.returncode})")
        return out

    async def transcribe(self, data: bytes, name: str, mime: str) -> str:
        try:
            async with asyncio.timeout(self.cfg.timeout_seconds):
                result = await self._client.audio.transcriptions.create(
                    model=self.transcribe_model, file=(name or "clip", data, mime)
                )
        except TimeoutError:
            raise MediaError(f"no transcript within {self.cfg.timeout_seconds:g}s") from None
        except openai.APIStatusError as exc:
            if exc.status_code in UNSUPPORTED_STATUSES:
                raise AudioUnsupported(f"no transcription API at {self.base_url}") from None
            raise MediaError(f"the transcription API refused the clip (HTTP {exc.status_code})") from None
        except openai.OpenAIError as exc:
            raise MediaError(f"the transcription API failed ({type(exc).__name__})") from None
        return str(getattr(result, "text", "") or "").strip()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.close()


# -- plain text for speaking -----------------------------------------------------------------------

_MARKUP = re.compile(r"<[^>]{0,200}>|\[(?P<label>[^\]]{0,200})\]\([^)]{0,500}\)")
_EMPHASIS = re.compile(r"[*_`~#|]+|^>+", re.MULTILINE)


def speakable(text: str, limit: int) -> str:
    """What a voice reads: markup and links dropped (a link's label kept), whitespace folded, cut at a
    sentence end within ``limit`` characters."""
    plain = _EMPHASIS.sub("", _MARKUP.sub(lambda m: m.group("label") or " ", text))
    plain = " ".join(plain.split())
    if len(plain) <= limit:
        return plain
    cut = plain[:limit]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    return cut[: end + 1] if end > limit // 2 else cut


# -- the runtime's part ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heard:
    """What listening to a turn's clips concluded."""

    text: str  # the transcripts, joined: the turn's words
    note: str  # what memory keeps of the clips (a reference, never the audio)
    reply: str = ""  # non-empty: answer this instead (rejected, over quota, unreadable, unsupported)
    reason: str = ""  # audio_rejected | audio_quota | audio_unreadable | audio_unsupported


REJECTED = "I can listen to {types} clips up to {mb:g} MB and {secs:g} seconds. Could you send a shorter one?"
UNREADABLE = "I couldn't make out that recording. Could you try again, or type it?"
MAX_CLIPS = 2  # per message; more are ignored


@dataclass
class Audio:
    client: AudioClient
    quotas: AudioQuotas
    cfg: AudioConfig
    fetcher: ImageFetcher

    def _rejected(self) -> str:
        types = ", ".join(sorted({t.split("/")[-1].replace("x-", "").upper() for t in self.cfg.types}))
        return REJECTED.format(
            types=types, mb=round(self.cfg.max_bytes / 1_000_000, 1), secs=self.cfg.max_seconds
        )

    async def listen(self, turn: Turn) -> Heard:
        refs = turn.audio[:MAX_CLIPS]
        note = memory_note(refs)
        if not self.cfg.listen:
            return Heard("", note)
        if any(r.duration > self.cfg.max_seconds for r in refs):
            return Heard("", note, self._rejected(), "audio_rejected")
        texts = []
        for ref in refs:
            try:
                reserved = await self.quotas.reserve(turn, "clips")
            except StoreError:
                return Heard("", note, UNREADABLE, "audio_unreadable")
            if isinstance(reserved, str):
                return Heard("", note, reserved, "audio_quota")
            try:
                texts.append(await self._hear(ref, turn))
            except ImageRejected:
                await reserved.release()
                return Heard("", note, self._rejected(), "audio_rejected")
            except AudioUnsupported as exc:
                await reserved.release()
                log.error("transcription_unsupported", detail=str(exc))
                return Heard("", note, NO_TRANSCRIPTION, "audio_unsupported")
            except MediaError as exc:
                await reserved.release()
                log.warning("clip_unreadable", clip=ref.id, detail=str(exc))
                return Heard("", note, UNREADABLE, "audio_unreadable")
        text = " ".join(t for t in texts if t)
        if not text:
            return Heard("", note, UNREADABLE, "audio_unreadable")
        return Heard(text, note)

    async def _bytes(self, ref: AudioRef, turn: Turn) -> tuple[bytes, str]:
        if ref.url.startswith("file://") and turn.place.platform == "console":  # your own terminal's file
            data = await asyncio.to_thread(
                _read_local, Path(ref.url.removeprefix("file://")), self.cfg.max_bytes
            )
            mime = sniff_audio(data)
            if mime not in self.fetcher.types:
                raise ImageRejected("the file is not an accepted audio type")
            return data, mime
        as_file = ImageRef(ref.url, ref.mime, ref.size, ref.name, "", ref.id)  # the fetcher's file reference
        got = await self.fetcher.fetch(as_file, turn.place)
        return got.data, got.mime

    async def _hear(self, ref: AudioRef, turn: Turn) -> str:
        data, mime = await self._bytes(ref, turn)
        seconds = duration_of(data, mime)
        if seconds is not None and seconds > self.cfg.max_seconds:
            raise ImageRejected(f"{seconds:.0f}s is over the {self.cfg.max_seconds:g}s limit")
        started = time.perf_counter()
        text = await self.client.transcribe(data, ref.name or f"clip.{EXT.get(mime, 'audio')}", mime)
        log.info(
            "clip_transcribed",
            clip=ref.id,
            bytes=len(data),
            seconds=seconds or ref.duration or None,
            ms=round((time.perf_counter() - started) * 1000),
        )
        return text

    def voice_for(self, ctx: TurnContext) -> str:
        return ctx.persona.voice or self.cfg.voice

    async def narrate(self, ctx: TurnContext, text: str, *, voice: str = "") -> str:
        """Read ``text`` (already moderated) aloud into ``ctx.attachments``; '' or what to tell the user."""
        words = speakable(text, self.cfg.max_speak_chars)
        if not words:
            return ""
        try:
            reserved = await self.quotas.reserve(ctx.turn, "speech")
        except StoreError as exc:
            ctx.log.error("audio_quota_unavailable", error=str(exc))
            return "I can't check the recording quota right now. Please try again in a moment."
        if isinstance(reserved, str):
            ctx.meta["reason"] = "speech_quota"
            return reserved
        try:
            speech = await self.client.speak(words, voice or self.voice_for(ctx))
        except AudioUnsupported as exc:
            await reserved.release()
            ctx.log.error("speech_unsupported", detail=str(exc))
            ctx.meta["reason"] = "speech_unsupported"
            return NO_SPEECH
        except MediaError as exc:
            await reserved.release()
            ctx.log.error("speech_failed", detail=str(exc))
            ctx.meta["reason"] = "speech_failed"
            return FAILED
        ctx.meta["speech"] = speech.id
        ctx.attachments.append(
            Attachment(f"speech-{speech.id}.{speech.ext}", speech.mime, speech.data, title="Read aloud")
        )
        return ""

    async def aclose(self) -> None:
        await self.client.aclose()


def _read_local(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise MediaError(f"cannot read {path.name}: {exc.strerror}") from None
    if len(data) > limit:
        raise ImageRejected(f"over the {limit}-byte limit")
    return data


def speak_command(audio: Audio) -> Command:
    async def handler(ctx: TurnContext, call: CommandCall) -> AsyncIterator[str]:
        text = (
            call.args.strip()
        )  # already moderated by the engine's command stage: a refused text never gets here
        if not text:
            yield "Tell me what to say, e.g. /speak Once upon a time, in a land far away..."
            return
        yield "🔊 Reading it aloud."
        problem = await audio.narrate(ctx, text)
        if problem:
            yield "\n\n" + problem

    return Command(
        "speak", "Read a text aloud (an audio file)", handler, usage="<text>", args_description="what to say"
    )


def memory_note(refs: Sequence[AudioRef]) -> str:
    """What memory keeps of the clips: a reference, never the audio."""
    notes = []
    for ref in refs:
        length = f" {ref.duration:.0f}s" if ref.duration else ""
        ident = f" id {ref.id}" if ref.id else ""
        notes.append(f"[{'voice message' if ref.voice else 'audio'}: {ref.name or 'clip'}{ident}{length}]")
    return " ".join(notes)
