"""Images in on Slack: a shared file is downloaded with the bot token (url_private), within the type and
size limits, and reaches the vision persona as an image part."""

from __future__ import annotations

from typing import Any

from tests.fakes.images import decode_data_url, png
from tests.fakes.openai_server import FakeOpenAI, last_user_text
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.slack.conftest import StartSlack


def with_files(event: dict[str, Any], *files: dict[str, Any]) -> dict[str, Any]:
    event["event"]["files"] = list(files)
    event["event"]["subtype"] = "file_share"
    return event


async def test_a_shared_image_is_downloaded_with_the_bot_token(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    picture = png(rgb=(255, 0, 0), text=b"error 504 on checkout")
    shared = slack.add_file("screenshot.png", picture, "image/png", title="checkout error")
    await app.sender.event(with_files(rq.app_mention("what does this error mean?"), shared))
    await app.settle()

    assert slack.file_downloads == [(shared["id"], slack.bot_token)]
    (url,) = fake_openai.image_inputs()
    assert decode_data_url(url) == picture
    text = last_user_text(fake_openai.chat_requests[-1].body)
    assert "what does this error mean?" in text and '"checkout error"' in text  # the caption rides along
    (msg,) = slack.bot_messages("C0GENERAL")
    assert msg.shown.endswith("[1 image(s)]")


async def test_a_file_over_the_size_limit_is_not_downloaded(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    shared = slack.add_file("huge.png", png(), "image/png")
    shared["size"] = 50_000_000  # declared by Slack: over [images] max_bytes
    await app.sender.event(with_files(rq.app_mention("look"), shared))
    await app.settle()
    assert slack.file_downloads == []
    assert fake_openai.chat_requests == []
    (msg,) = slack.bot_messages("C0GENERAL")
    assert "I can only look at GIF, JPEG, PNG, WEBP images up to 5 MB" in msg.shown


async def test_the_token_never_goes_to_a_foreign_host(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    app = await start_slack()
    shared = slack.add_file("a.png", png(), "image/png")
    shared["url_private"] = shared["url_private_download"] = "http://127.0.0.2:9/a.png"
    await app.sender.event(with_files(rq.app_mention("look"), shared))
    await app.settle()
    assert fake_openai.chat_requests == []
    (msg,) = slack.bot_messages("C0GENERAL")
    assert "couldn't open that image" in msg.shown
