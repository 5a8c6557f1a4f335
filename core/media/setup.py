"""What a runtime owns for images: the fetcher and vision step; `/imagine`'s generator and quotas."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from core.bot import BotSpec
from core.commands import Command
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

    def commands(self) -> list[Command]:
        return [imagine_command(self.generator, self.quotas)]

    async def aclose(self) -> None:
        await self.fetcher.aclose()
        await self.generator.aclose()


def build_media(
    spec: BotSpec,
    settings: Settings,
    moderator: object,
    auth_for: Callable[[str], object | None],
    limits: LimitStore,
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
    return Media(vision, fetcher, generator, ImageQuotas(limits, cfg, spec.config.limits))
