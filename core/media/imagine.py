"""Images out: ``/imagine <prompt>`` through the OpenAI Images API (any compatible server), with quotas.

    /imagine <prompt> -> the engine's command stage moderates the prompt (a refused one never gets here;
                         a flagged one, on a profile that flags rather than refuses, is refused here)
                      -> per-user and per-server daily image quotas reserved atomically
                         (core/safety/reserve.py: parallel requests cannot overshoot)
                      -> a progress line -> ``images.generate`` -> the PNG as a reply :class:`Attachment`
                      -> a failed picture gives its reservations back (only images made are counted)

An image is logged by its id, model, size and timing, never by its prompt or its bytes. An endpoint without
an Images API (404/405/501) gets a clear answer naming the setting to change.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import openai
import structlog

from core.bot import ImagesConfig, LimitsConfig
from core.commands import Command
from core.errors import ImagesUnsupported, MediaError, StoreError
from core.media.fetch import sniff
from core.net.guard import FetchError, FetchPolicy, GuardedFetcher
from core.net.tls import http_client
from core.safety.limits import LimitStore, user_tag
from core.safety.reserve import Held, QuotaSpec, Reserver
from core.types import DIRECT_WORKSPACE, Attachment, CommandCall, Place, Turn

if TYPE_CHECKING:
    from core.context import TurnContext

log = structlog.get_logger("parley.media")

UNSUPPORTED_STATUSES = frozenset({404, 405, 501})
MAX_IMAGE_BYTES = 20_000_000  # a generated image fetched by URL (servers that return URLs, not base64)


@dataclass(frozen=True, slots=True)
class Generated:
    id: str  # ours, for logs: never the prompt
    mime: str
    data: bytes = field(repr=False)


class ImageGenerator:
    """``images.generate`` on an ``openai.AsyncOpenAI`` client; ``aclose()`` is idempotent."""

    def __init__(self, *, api_key: str, base_url: str | None, model: str, size: str, timeout: float) -> None:
        self.model = model
        self.size = size
        self.base_url = base_url or "https://api.openai.com/v1"
        self._timeout = timeout
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=openai.Timeout(timeout, connect=5.0),
            max_retries=1,
            http_client=http_client(base_url),
        )
        self._closed = False

    async def generate(self, prompt: str, *, user: str = "") -> Generated:
        image_id = uuid.uuid4().hex[:16]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.images.generate(
                    model=self.model, prompt=prompt, size=self.size, n=1
                )
        except TimeoutError:
            raise MediaError(f"no image within {self._timeout:g}s") from None
        except openai.APIStatusError as exc:
            if exc.status_code in UNSUPPORTED_STATUSES:
                raise ImagesUnsupported(
                    f"the endpoint at {self.base_url} has no Images API (HTTP {exc.status_code})"
                ) from None
            raise MediaError(f"the Images API refused the request (HTTP {exc.status_code})") from None
        except openai.OpenAIError as exc:
            raise MediaError(f"the Images API failed ({type(exc).__name__})") from None
        if not response.data:
            raise MediaError("the Images API returned no image")
        item = response.data[0]
        if item.b64_json:
            data = base64.b64decode(item.b64_json)
        elif item.url:
            data = await _download(item.url, self._timeout, self.base_url)
        else:
            raise MediaError("the Images API returned neither b64_json nor a url")
        mime = sniff(data)
        if not mime:
            raise MediaError("the Images API returned something that is not an image")
        log.info(
            "image_generated",
            image=image_id,
            model=self.model,
            bytes=len(data),
            ms=round((time.perf_counter() - started) * 1000),
            user=user,
        )
        return Generated(image_id, mime, data)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.close()


async def _download(url: str, seconds: float, api_base: str) -> bytes:
    """A generated image's URL, through the outbound-fetch guard: https and public addresses, except the
    Images API's own host (the operator configured it: a local server may hand out its own URLs)."""
    api = urlsplit(api_base)
    host = api.hostname or ""
    policy = FetchPolicy(
        (host,), http_hosts=(host,) if api.scheme == "http" else (), setting="OPENAI_BASE_URL"
    )
    fetcher = GuardedFetcher(policy, timeout=seconds, user_agent="parley-images")
    try:
        return (await fetcher.get(url, max_bytes=MAX_IMAGE_BYTES)).data
    except FetchError as exc:
        raise MediaError(f"the generated image could not be fetched: {exc}") from None
    finally:
        await fetcher.aclose()


def quota_scope(place: Place, user_id: str) -> str:
    """Whose shared image quota a picture counts against: the server's (``<platform>:<workspace>``), or,
    where the "workspace" is no real one (Discord DMs: ``@me`` for everyone), the user's own; else every DM
    user would share one counter and one user could use up everyone's pictures."""
    if place.workspace == DIRECT_WORKSPACE:
        return f"{place.platform}:{DIRECT_WORKSPACE}:{user_tag(place.platform, user_id)}"
    return f"{place.platform}:{place.workspace}"


class ImageQuotas:
    """Daily image counts per user and per server, reserved before the picture is asked for (one atomic
    script per quota) and given back when no picture came."""

    def __init__(self, store: LimitStore, config: ImagesConfig, limits: LimitsConfig) -> None:
        self.store = store
        self.reserver = Reserver(store.client)
        self.config = config
        self.limits = limits  # exemptions shared with the chat limits (your own terminal, maybe admins)

    def exempt(self, turn: Turn) -> bool:
        lim = self.limits
        return turn.place.platform in lim.exempt_platforms or (lim.exempt_admins and turn.author.is_admin)

    def specs(self, place: Place, user_id: str) -> list[QuotaSpec]:
        cfg, specs = self.config, []
        window = cfg.quota_window_seconds
        if cfg.user_daily:
            key = self.store.quota_key("image-user", user_tag(place.platform, user_id), window)
            specs.append(QuotaSpec(key, cfg.user_daily, window, label="image-user"))
        if cfg.workspace_daily:
            key = self.store.quota_key("image-workspace", quota_scope(place, user_id), window)
            # a DM user's own counter where the "workspace" is no real one: told as "your" quota
            label = "image-dm" if place.workspace == DIRECT_WORKSPACE else "image-workspace"
            specs.append(QuotaSpec(key, cfg.workspace_daily, window, label=label))
        return specs

    async def reserve(self, turn: Turn) -> Held:
        """One picture from each quota, all or none (exempt users: nothing to reserve)."""
        return await self.reserver.reserve_all(
            [] if self.exempt(turn) else self.specs(turn.place, turn.author.id)
        )

    async def release(self, held: Held) -> None:
        await self.reserver.release_all(held.taken)

    @staticmethod
    def refusal(held: Held) -> str | None:
        """What to tell the user when a quota is used up (None: go on)."""
        refused = held.refused
        if refused is None:
            return None
        whose = "your" if refused.spec.label in {"image-user", "image-dm"} else "this server's"
        return f"That's {whose} {refused.spec.limit} images for today. More in {_duration(refused.retry_ms)}."

    async def status(self, place: Place) -> str:
        """The server's line for ``/safety status``: limits and what is used today."""
        cfg = self.config
        line = (
            f"Image quotas per {cfg.quota_window_seconds}s: user {cfg.user_daily or 'none'}, "
            f"server {cfg.workspace_daily or 'none'}"
        )
        if not cfg.workspace_daily:
            return line + "."
        check = self.store.quota(
            "image-workspace",
            f"{place.platform}:{place.workspace}",
            cfg.workspace_daily,
            cfg.quota_window_seconds,
        )
        outcomes, _ = await self.store.run([check])
        return line + f"; used here today: {outcomes[0].used}."


async def _give_back(ctx: TurnContext, quotas: ImageQuotas, held: Held) -> None:
    try:
        await quotas.release(held)
    except StoreError as exc:  # the user loses one picture of today's quota, no more
        ctx.log.warning("image_quota_not_released", error=str(exc))


def _duration(ms: int) -> str:
    minutes = max(1, round(ms / 60_000))
    return f"{minutes} minutes" if minutes < 120 else f"{round(minutes / 60)} hours"


NO_IMAGES_API = (
    "I can't make pictures here: the model server has no image API. (Admins: point OPENAI_BASE_URL at a "
    "server with /v1/images/generations, or set PARLEY_IMAGE_MODEL to a model it serves.)"
)
FAILED = "Sorry, the picture didn't come out. Please try again in a moment."


def imagine_command(generator: ImageGenerator, quotas: ImageQuotas) -> Command:
    async def handler(ctx: TurnContext, call: CommandCall) -> AsyncIterator[str]:
        prompt = call.args.strip()  # already moderated by the engine's command stage
        if not prompt:
            yield "Tell me what to draw, e.g. /imagine a lighthouse in a storm, watercolour"
            return
        if ctx.flag:  # moderation flagged the prompt (a profile that flags, not refuses)
            ctx.meta["reason"] = "image_prompt_flagged"
            yield ctx.persona.refusal
            return
        try:
            held = await quotas.reserve(ctx.turn)
        except StoreError as exc:
            ctx.log.error("image_quota_unavailable", error=str(exc))
            yield "I can't check the image quota right now. Please try again in a moment."
            return
        if (over := quotas.refusal(held)) is not None:
            ctx.meta["reason"] = "image_quota"
            yield over
            return
        try:
            yield f"🎨 {prompt}"  # the progress line, and the picture's caption once it is there
            image = await generator.generate(
                prompt, user=user_tag(ctx.turn.place.platform, ctx.turn.author.id)
            )
        except ImagesUnsupported as exc:
            await _give_back(ctx, quotas, held)
            ctx.log.error("images_unsupported", detail=str(exc))
            ctx.meta["reason"] = "images_unsupported"
            yield "\n\n" + NO_IMAGES_API
            return
        except MediaError as exc:
            await _give_back(ctx, quotas, held)
            ctx.log.error("image_failed", detail=str(exc))
            ctx.meta["reason"] = "image_failed"
            yield "\n\n" + FAILED
            return
        except BaseException:  # cancelled (the user left, shutdown) or a bug: no picture, nothing counted
            await _give_back(ctx, quotas, held)
            raise
        ext = image.mime.split("/")[-1].replace("jpeg", "jpg")
        ctx.meta["image"] = image.id
        ctx.attachments.append(
            Attachment(f"imagine-{image.id}.{ext}", image.mime, image.data, title=prompt[:200])
        )

    return Command(
        "imagine",
        "Draw a picture from your words",
        handler,
        usage="<prompt>",
        args_description="what to draw",
    )
