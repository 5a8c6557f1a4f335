"""Pure pieces of images in: queue items carry image references, memory notes, type sniffing."""

from __future__ import annotations

from core.llm import ChatMessage
from core.media.fetch import sniff
from core.media.vision import memory_note
from core.ops.jobs import Job, Route, decode_job, encode_job
from core.types import Author, ImageRef, Place, Turn
from tests.fakes.images import png


def test_a_queued_turn_keeps_its_image_references() -> None:
    ref = ImageRef("https://cdn.example/a.png", "image/png", 1234, "a.png", "a cat", "42")
    turn = Turn(Author("u1"), Place("discord", "g", "c"), "look", images=(ref,))
    back = decode_job(encode_job(Job(turn, Route("discord"))))
    assert back.turn.images == (ref,)
    plain = decode_job(
        encode_job(Job(Turn(Author("u1"), Place("discord", "g", "c"), "hi"), Route("discord")))
    )
    assert plain.turn.images == ()


def test_memory_note_has_a_reference_and_a_short_caption() -> None:
    long = "word " * 100
    note = memory_note([ImageRef("u", name="cat.png", caption=long, id="9"), ImageRef("v")])
    assert note.startswith('[image: cat.png id 9 "word word')
    assert len(note) < 200
    assert note.endswith("[image: image]")


def test_sniff_trusts_the_bytes_not_the_name() -> None:
    assert sniff(png()) == "image/png"
    assert sniff(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"<html>") == ""


def test_a_message_with_images_becomes_content_parts() -> None:
    assert ChatMessage("user", "hi").to_openai() == {"role": "user", "content": "hi"}
    wired = ChatMessage("user", "what is it?", images=("data:image/png;base64,AAAA",)).to_openai()
    assert wired["content"] == [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
