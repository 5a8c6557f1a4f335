"""What a runtime owns for media: images (the fetcher and vision step; `/imagine`'s generator and quotas) and
audio (speech out, clips in: core/media/audio.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from core.bot import BotSpec
from core.commands import Command
from core.keys import KeySpace
from core.media.audio import Audio, AudioClient, AudioQuotas, sniff_audio, speak_command
from core.media.fetch import ImageFetcher
from core.media.imagine import ImageGenerator, ImageQuotas, imagine_command
from core.media.vision import ImageModerator, Vision
from core.safety.limits import LimitStore
from core.settings import Settings


@dataclass
class Media:
    vision: Vision
    fetcher: ImageFetcher
    generator: ImageGenerator
    quotas: ImageQuotas
    audio: Audio

    def commands(self, enabled: list[str]) -> list[Command]:
        """The media commands the bot's ``commands`` list names (``imagine``, ``speak``)."""
        made = {"imagine": imagine_command(self.generator, self.quotas), "speak": speak_command(self.audio)}
        return [command for name, command in made.items() if name in enabled]

    async def aclose(self) -> None:
        await self.fetcher.aclose()
        await self.generator.aclose()
        await self.audio.fetcher.aclose()
        await self.audio.aclose()


def build_media(
    spec: BotSpec,
    settings: Settings,
    moderator: object,
    auth_for: Callable[[str], object | None],
    limits: LimitStore,
    client: aioredis.Redis,
    keys: KeySpace,
) -> Media:
    """``moderator``: the safety chain (it judges images when it has ``check_image``); ``auth_for``: a
    platform's Delivery (its credentials, :class:`ImageAuth`, and file hosts, :class:`ImageSource`)."""
    cfg = spec.config.images
    fetcher = ImageFetcher(
        max_bytes=cfg.max_bytes,
        types=frozenset(t.lower() for t in cfg.types),
        timeout=cfg.fetch_timeout_seconds,
        auth_for=auth_for,
        allow=tuple(cfg.fetch_allow),
    )
    judge = cast("ImageModerator", moderator) if hasattr(moderator, "check_image") else None
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
    generator = ImageGenerator(
        api_key=key,
        base_url=settings.openai_base_url or None,
        model=settings.parley_image_model or cfg.model,  # env over bot.toml
        size=cfg.size,
        timeout=cfg.timeout_seconds,
    )
    vision = Vision(fetcher, judge, max_per_message=cfg.max_per_message)
    return Media(
        vision,
        fetcher,
        generator,
        ImageQuotas(limits, cfg, spec.config.limits),
        _audio(spec, settings, client, keys, auth_for),
    )


def _audio(
    spec: BotSpec,
    settings: Settings,
    client: aioredis.Redis,
    keys: KeySpace,
    auth_for: Callable[[str], object | None],
) -> Audio:
    """Speech and transcription on PARLEY_TTS_BASE_URL (and its key), else the LLM's endpoint."""
    cfg = spec.config.audio
    secret = settings.parley_tts_api_key or settings.openai_api_key
    fetcher = ImageFetcher(
        max_bytes=cfg.max_bytes,
        types=frozenset(t.lower() for t in cfg.types) | {"audio/wav"},  # x-wav declared, wav sniffed
        timeout=cfg.timeout_seconds,
        auth_for=auth_for,
        allow=tuple(spec.config.images.fetch_allow),  # the same outbound-fetch guard as images
        sniffer=sniff_audio,
    )
    api = AudioClient(
        api_key=secret.get_secret_value() if secret else "not-needed",
        base_url=settings.parley_tts_base_url or settings.openai_base_url or None,
        speech_model=settings.parley_tts_model,
        transcribe_model=settings.parley_transcribe_model,
        cfg=cfg,
    )
    return Audio(api, AudioQuotas(client, keys, cfg, spec.config.limits), cfg, fetcher)
