"""Ingested text is untrusted: the prompt-injection tripwires of core/safety run on every chunk at ingest
(its text and everything shown with it: title, headings, context, URL)
(flagged chunks are reported and, unless ``[kb] allow_flagged``, kept out of the index), and personal data is
redacted with the bot's ``[privacy] redact`` kinds before anything is stored."""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.kb.model import Chunk, Flagged, Section
from core.safety.redact import PIIRedactor
from core.safety.rules import injection_hits
from core.safety.text import normalize


@dataclass
class Screen:
    redactor: PIIRedactor | None
    allow_flagged: bool = False

    def section(self, source: str, section: Section) -> Flagged | None:
        """The tripwires on one section before chunking, so a flagged section is held back alone and does
        not take the neighbours it would share a chunk with (None: clean)."""
        hits = injection_hits(normalize(" › ".join(section.headings) + "\n" + section.text))
        return Flagged(source, section.headings, hits[0].detail, self.allow_flagged) if hits else None

    def check(self, chunk: Chunk) -> tuple[Chunk | None, Flagged | None, bool]:
        """(the chunk to index or None, what the tripwires found, whether personal data was redacted)."""
        # Titles, headings, page context and URLs reach the prompt too: screened like the text.
        seen = "\n".join((chunk.title, chunk.url, chunk.heading_path, chunk.context, chunk.text))
        hits = injection_hits(normalize(seen))
        flagged = None
        if hits:
            flagged = Flagged(chunk.source, chunk.headings, hits[0].detail, self.allow_flagged)
            if not self.allow_flagged:
                return None, flagged, False
        redacted = False
        if self.redactor is not None:
            text, kinds = self.redactor.scan(chunk.text)
            if kinds:
                chunk = replace(chunk, text=text)
                redacted = True
        return chunk, flagged, redacted
