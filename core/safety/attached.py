"""What a turn carries beside its text goes through input moderation too: image file names and captions
(Slack's ``alt_txt``, a Discord attachment's description). They reach the model (the vision note) and
memory, so "Ignore all previous instructions" as an alt text is judged exactly as it would be as text.

One check over all of them (one endpoint call); only when moderation would rewrite something (a link, a
mention, personal data) is each field checked on its own, so the rewritten values replace the originals.
"""

from __future__ import annotations

from dataclasses import replace

from core.moderation import Action, Moderator, Verdict
from core.types import ImageRef, Turn


async def moderated_images(moderator: Moderator, turn: Turn) -> tuple[tuple[ImageRef, ...], Verdict | None]:
    """(the turn's images with names and captions as moderation leaves them, the verdict) - the verdict is
    None when there was no text to judge; a refusing verdict comes with no images."""
    texts = [t for ref in turn.images for t in (ref.name, ref.caption) if t.strip()]
    if not texts:
        return turn.images, None
    joined = "\n".join(texts)
    verdict = await moderator.check_input(turn, joined)
    if verdict.action is Action.REFUSE:
        return (), verdict
    if verdict.text == joined:
        return turn.images, verdict
    refs = []
    for ref in turn.images:
        name, caption = ref.name, ref.caption
        if name.strip():
            judged = await moderator.check_input(turn, name)
            if judged.action is Action.REFUSE:
                return (), judged
            name = judged.text
        if caption.strip():
            judged = await moderator.check_input(turn, caption)
            if judged.action is Action.REFUSE:
                return (), judged
            caption = judged.text
        refs.append(replace(ref, name=name, caption=caption))
    return tuple(refs), verdict
