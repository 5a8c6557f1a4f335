"""``/imagine``: the picture is uploaded on Discord and Slack and saved by the terminal; the prompt is
moderated first; quotas hold; an endpoint without an Images API gets a clear answer."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

from adapters.console.chat import ConsoleChat, ConsoleOptions
from bots.loader import load_bot
from core.bot import BotSpec
from core.media.imagine import NO_IMAGES_API
from core.types import ReplyKind
from tests.conftest import RuntimeFactory
from tests.discord.conftest import BotFactory
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import Error, FakeOpenAI
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.slack.conftest import RUNTIME, StartSlack, support_spec

PNG = b"\x89PNG\r\n\x1a\n"


def with_images(spec: BotSpec, **images: object) -> BotSpec:
    cfg = spec.config.model_copy(
        update={
            "images": spec.config.images.model_copy(update=images),
            "commands": [*spec.config.commands, "imagine"],
        }
    )
    return dataclasses.replace(spec, config=cfg)


async def test_imagine_posts_a_file_on_discord(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    async with bot_factory():
        await fake.slash("imagine", {"prompt": "a red kite over the sea"})
        await fake.wait_for(lambda: fake.uploads)
        await fake.wait_for(lambda: any("a red kite" in m["content"] for m in fake.bot_messages()))
    (upload,) = fake.uploads
    assert upload.data.startswith(PNG) and upload.filename.startswith("imagine-")
    assert upload.channel_id == fake.general["id"]
    (request,) = fake_openai.image_requests
    assert request.body["prompt"] == "a red kite over the sea"
    assert request.body["model"] == "gpt-image-1"
    # The prompt was moderated before the image call.
    assert any(r.body.get("input") == "a red kite over the sea" for r in fake_openai.moderation_requests)
    assert fake_openai.moderation_requests[0].at < request.at


async def test_a_refused_prompt_makes_no_image_call(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.flagged_words.add("forbidden thing")
    fake_openai.text_flag_category = "sexual"  # refused outright by arcade's relaxed profile
    async with bot_factory() as bot:
        refusal = bot.runtime.bot.personas["host"].refusal
        await fake.slash("imagine", {"prompt": "a forbidden thing"})
        await fake.wait_for(lambda: any(m["content"] == refusal for m in fake.bot_messages()))
    assert fake_openai.image_requests == []
    assert fake.uploads == []


async def test_imagine_uploads_with_files_upload_v2_on_slack(
    start_slack: StartSlack, runtime_factory: RuntimeFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    async with runtime_factory(spec=with_images(support_spec()), parley_queue=False, **RUNTIME) as rt:
        app = await start_slack(runtime=rt)
        await app.sender.command(
            rq.slash_command("/imagine", "a paper boat", response_url=slack.response_url())
        )
        await slack.wait_for(lambda: bool(slack.uploads()))
        await app.settle()
    (upload,) = slack.uploads()
    assert upload.data.startswith(PNG)
    assert upload.channel == "C0GENERAL"
    assert upload.title == "a paper boat"
    assert slack.calls_to("files.getUploadURLExternal") and slack.calls_to("files.completeUploadExternal")
    # Progress: the caption line was posted in the channel before the picture, and the picture went in
    # the caption's thread (not as a second top-level message).
    (caption,) = [m for m in slack.bot_messages("C0GENERAL") if "a paper boat" in m.shown]
    assert not caption.thread_ts and upload.thread_ts == caption.ts


async def chat(rt: object, tmp_path: Path, *lines: str) -> tuple[ConsoleChat, io.StringIO]:
    out = io.StringIO()
    console = ConsoleChat(
        rt.bot,  # type: ignore[attr-defined]
        rt.engine.reply,  # type: ignore[attr-defined]
        ConsoleOptions(files_dir=tmp_path / "images", user_id="console-user"),
        stdout=out,
    )
    for line in lines:
        await console.say(line)
    return console, out


async def test_the_terminal_saves_the_image_and_prints_its_path(
    runtime_factory: RuntimeFactory, tmp_path: Path
) -> None:
    async with runtime_factory("arcade") as rt:
        _, out = await chat(rt, tmp_path, "/imagine a lighthouse at dawn")
    (saved,) = list((tmp_path / "images").iterdir())
    assert saved.read_bytes().startswith(PNG)
    assert f"[file saved: {saved.resolve()}]" in out.getvalue()


async def test_quotas_are_enforced_per_user_and_per_server(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    spec = with_images(load_bot("arcade"), user_daily=1, workspace_daily=2)
    # The terminal is exempt from limits as shipped (your own terminal): count it here like a server.
    limits = spec.config.limits.model_copy(update={"exempt_platforms": []})
    spec = dataclasses.replace(spec, config=spec.config.model_copy(update={"limits": limits}))
    async with runtime_factory(spec=spec) as rt:
        engine = rt.engine
        _, out = await chat(rt, tmp_path, "/imagine one", "/imagine two")
        assert len(fake_openai.image_requests) == 1
        assert "That's your 1 images for today" in out.getvalue()
        # Another user on the same server: the server's quota (2) allows one more, then no more.
        other = ConsoleChat(
            rt.bot, engine.reply, ConsoleOptions(files_dir=tmp_path, user_id="u2"), stdout=out
        )
        await other.say("/imagine three")
        third = ConsoleChat(
            rt.bot, engine.reply, ConsoleOptions(files_dir=tmp_path, user_id="u3"), stdout=out
        )
        result = await third.say("/imagine four")
        assert len(fake_openai.image_requests) == 2
        assert "this server's 2 images for today" in result.text
        status = await other.say("/safety")
        assert "Image quotas per 86400s: user 1, server 2; used here today: 2." in status.text


async def test_the_terminal_is_exempt_as_shipped(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    async with runtime_factory(spec=with_images(load_bot("arcade"), user_daily=1)) as rt:
        await chat(rt, tmp_path, "/imagine one", "/imagine two")
    assert len(fake_openai.image_requests) == 2


async def test_an_endpoint_without_images_api_gets_a_clear_answer(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.images_behaviour = Error(404, "Not Found")
    async with runtime_factory("arcade") as rt:
        out = io.StringIO()
        console = ConsoleChat(
            rt.bot, rt.engine.reply, ConsoleOptions(files_dir=tmp_path, jsonl=True), stdout=out
        )
        result = await console.say("/imagine a cat")
    assert NO_IMAGES_API in result.text
    assert result.kind is ReplyKind.COMMAND and result.meta["reason"] == "images_unsupported"
    assert json.loads(out.getvalue())["files"] == []
    assert len(fake_openai.image_requests) == 1  # asked once; no retry loop against a missing API
