"""Images in: a turn's attachments -> image parts for a vision persona, after limits and moderation.

    turn.images -> (persona has no vision: its polite ``no_vision`` text, no download, no LLM call)
                -> declared type/size -> download (size cap, type sniffed from the bytes)
                -> moderation (the endpoint's image input) -> ``data:`` URLs for the model

Memory never keeps the bytes: :func:`memory_note` is what the user message is stored with (the file's
name, the platform's id and a short caption).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from core.errors import ImageRejected, MediaError
from core.media.fetch import ImageFetcher
from core.moderation import Action, Verdict
from core.personas import Persona
from core.types import ImageRef, Turn

log = structlog.get_logger("parley.media")

CAPTION_CHARS = 120
REJECTED = "I can only look at {types} images up to {mb:g} MB. Could you send a smaller one?"
UNREADABLE = "I couldn't open that image. Could you try uploading it again?"


class ImageModerator(Protocol):
    async def check_image(self, turn: Turn, url: str) -> Verdict: ...


def memory_note(refs: Sequence[ImageRef]) -> str:
    """What memory keeps of the images: a reference and a short caption per image."""
    notes = []
    for ref in refs:
        caption = " ".join(ref.caption.split())[:CAPTION_CHARS]
        ident = f" id {ref.id}" if ref.id else ""
        text = f"[image: {ref.name or 'image'}{ident}"
        notes.append(text + (f' "{caption}"]' if caption else "]"))
    return " ".join(notes)


@dataclass(frozen=True, slots=True)
class Seen:
    """What the vision step concluded."""

    note: str  # for memory and the prompt's text
    images: tuple[str, ...] = ()  # data: URLs for the model
    reply: str = ""  # non-empty: answer this (no vision, rejected, refused, unreadable)
    reason: str = ""  # no_vision | image_rejected | image_refused | image_unreadable
    category: str = ""  # the moderation category that refused an image
    flag: str = ""


class Vision:
    def __init__(
        self, fetcher: ImageFetcher, moderator: ImageModerator | None, *, max_per_message: int
    ) -> None:
        self.fetcher = fetcher
        self.moderator = moderator
        self.max_per_message = max_per_message

    def _rejected_text(self) -> str:
        types = ", ".join(sorted(t.split("/")[-1].upper() for t in self.fetcher.types))
        return REJECTED.format(types=types, mb=round(self.fetcher.max_bytes / 1_000_000, 1))

    async def see(self, turn: Turn, persona: Persona) -> Seen:
        refs = turn.images[: self.max_per_message]
        note = memory_note(refs)
        if not persona.vision:
            return Seen(note, reply=persona.no_vision, reason="no_vision")
        urls: list[str] = []
        for ref in refs:
            try:
                image = await self.fetcher.fetch(ref, turn.place)
            except ImageRejected as exc:
                log.info("image_rejected", turn_id=turn.turn_id, image=ref.id, detail=str(exc))
                return Seen(note, reply=self._rejected_text(), reason="image_rejected")
            except MediaError as exc:
                log.warning("image_unreadable", turn_id=turn.turn_id, image=ref.id, detail=str(exc))
                return Seen(note, reply=UNREADABLE, reason="image_unreadable")
            url = image.data_url
            if self.moderator is None:  # nothing can judge images: never show one unjudged
                return Seen(note, reply=persona.refusal, reason="image_refused", category="unmoderated")
            verdict = await self.moderator.check_image(turn, url)
            if verdict.action is Action.REFUSE:
                log.info("image_refused", turn_id=turn.turn_id, image=ref.id, category=verdict.category)
                return Seen(
                    note,
                    reply=persona.refusal,
                    reason="image_refused",
                    category=verdict.category,
                    flag=verdict.flag,
                )
            urls.append(url)
        log.info("images_seen", turn_id=turn.turn_id, images=[r.id for r in refs], count=len(urls))
        return Seen(note, images=tuple(urls))
