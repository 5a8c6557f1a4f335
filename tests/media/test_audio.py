"""Audio (issue 26): speech out (``/speak``, narrated ``/story`` parts) and voice messages in (transcribed),
against the fake OpenAI-compatible server's ``/v1/audio/speech`` (a real WAV) and
``/v1/audio/transcriptions``, the fake Discord and the fake Slack, with the real clients."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import stat
import sys
from pathlib import Path

from adapters.console.chat import ConsoleChat, ConsoleOptions
from bots.loader import load_bot
from core.bot import BotSpec
from core.builtins import BUILTINS
from core.commands import CommandRegistry
from core.media.audio import NO_SPEECH, NO_TRANSCRIPTION, duration_of, sniff_audio, speakable
from core.types import AudioRef, Place, ReplyKind
from tests.conftest import RuntimeFactory
from tests.core.helpers import make_turn
from tests.discord.conftest import BotFactory
from tests.fakes.audio import wav
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import Error, FakeOpenAI, Reply, last_user_text
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.slack.conftest import RUNTIME, StartSlack, support_spec

RIFF = b"RIFF"


def with_audio(spec: BotSpec, *, limits_off: bool = False, **audio: object) -> BotSpec:
    cfg = spec.config.model_copy(
        update={
            "audio": spec.config.audio.model_copy(update=audio),
            "commands": [*spec.config.commands, "speak"],
        }
    )
    if limits_off is False:  # count the terminal and test platforms like a server
        cfg = cfg.model_copy(update={"limits": cfg.limits.model_copy(update={"exempt_platforms": []})})
    return dataclasses.replace(spec, config=cfg)


def test_the_bytes_decide_the_type_and_the_length() -> None:
    clip = wav(1.5)
    assert sniff_audio(clip) == "audio/wav"
    assert duration_of(clip, "audio/wav") == 1.5
    assert sniff_audio(b"OggS" + bytes(40)) == "audio/ogg"
    assert sniff_audio(b"ID3\x04" + bytes(20)) == "audio/mpeg"
    assert sniff_audio(b"<html>not audio</html>") == ""
    assert speakable("**Bold** and a [link](https://x.example/a?b=1) `code`", 100) == "Bold and a link code"


def test_narrate_is_a_switch_when_typed() -> None:
    registry = CommandRegistry()
    registry.add(BUILTINS["story"])
    call = registry.parse("/story a dragon who bakes bread --narrate")
    assert call is not None
    assert (call.args, call.options["narrate"]) == ("a dragon who bakes bread", "true")
    call = registry.parse("/story --narrate false a calm lake")
    assert call is not None
    assert (call.args, call.options["narrate"]) == ("a calm lake", "false")


async def test_speak_reads_a_text_aloud_in_the_personas_voice(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    async with runtime_factory(spec=with_audio(load_bot("arcade"))) as rt:
        result = await rt.engine.collect(make_turn("/speak Welcome to the *arcade*!"))
    (clip,) = result.attachments
    assert clip.mime == "audio/wav" and clip.data.startswith(RIFF) and clip.filename.endswith(".wav")
    assert fake_openai.spoken == ["Welcome to the arcade!"]  # markup is not read out
    (request,) = [r for r in fake_openai.requests if r.path.endswith("/audio/speech")]
    assert request.body["voice"] == "alloy" and request.body["response_format"] == "mp3"
    # The text was moderated before it was spoken.
    assert any(r.body.get("input") == "Welcome to the *arcade*!" for r in fake_openai.moderation_requests)
    assert fake_openai.moderation_requests[0].at < request.at


async def test_a_refused_text_is_never_spoken(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.flagged_words.add("forbidden words")
    fake_openai.text_flag_category = "sexual"  # refused by arcade's relaxed profile
    async with runtime_factory(spec=with_audio(load_bot("arcade"))) as rt:
        result = await rt.engine.collect(make_turn("/speak some forbidden words"))
    assert result.kind is ReplyKind.REFUSAL and result.attachments == ()
    assert fake_openai.spoken == []


async def test_a_server_without_speech_gets_a_clear_answer_or_the_local_engine(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.audio_behaviour = Error(404, "not found")
    async with runtime_factory(spec=with_audio(load_bot("arcade"))) as rt:
        client = rt.media.audio.client  # type: ignore[union-attr]
        client.local_engine = ""  # no espeak-ng on this machine, as far as this test knows
        result = await rt.engine.collect(make_turn("/speak hello there"))
        assert NO_SPEECH in result.text and result.attachments == ()
        # With a local engine installed (here a stand-in speaking espeak-ng's command line: --stdout -- TEXT,
        # a WAV on stdout), the same request is read aloud locally.
        engine = tmp_path / "espeak-ng"
        (tmp_path / "said.wav").write_bytes(wav(0.25))
        engine.write_text(
            f"#!{sys.executable}\nimport sys\nassert sys.argv[1:3] == ['--stdout', '--']\n"
            f"sys.stdout.buffer.write(open({str(tmp_path / 'said.wav')!r}, 'rb').read())\n"
        )
        engine.chmod(engine.stat().st_mode | stat.S_IEXEC)
        client.local_engine = str(engine)
        result = await rt.engine.collect(make_turn("/speak hello again", user="u2"))
    (clip,) = result.attachments
    assert clip.data.startswith(RIFF) and duration_of(clip.data, "audio/wav") == 0.25


async def test_speech_quotas_hold_under_parallel_requests(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    spec = with_audio(load_bot("arcade"), user_daily_speech=3, workspace_daily_speech=5)
    spec = dataclasses.replace(
        spec,
        config=spec.config.model_copy(
            update={
                "limits": spec.config.limits.model_copy(update={"command_rate": [], "exempt_platforms": []})
            }
        ),
    )
    async with runtime_factory(spec=spec) as rt:
        mine = await asyncio.gather(*(rt.engine.collect(make_turn(f"/speak line {i}")) for i in range(8)))
        others = await asyncio.gather(
            *(rt.engine.collect(make_turn(f"/speak other {i}", user=f"v{i}")) for i in range(6))
        )
    assert sum(1 for r in mine if r.attachments) == 3  # the user's 3 a day, whatever the race
    assert sum(1 for r in mine if "your 3 recordings for today" in r.text) == 5
    assert sum(1 for r in others if r.attachments) == 2  # the server's 5 in all
    assert len(fake_openai.spoken) == 5


async def test_a_narrated_story_part_is_an_audio_attachment_on_discord(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.queue(Reply("The dragon opened a bakery by the sea.\nChoices:\n1. Bake bread\n2. Sail away"))
    async with bot_factory():
        await fake.slash("story", {"prompt": "a dragon who bakes", "narrate": True})
        await fake.wait_for(lambda: fake.uploads)
    (upload,) = fake.uploads
    assert upload.data.startswith(RIFF) and upload.filename.startswith("speech-")
    assert fake_openai.spoken == ["The dragon opened a bakery by the sea."]  # the part, not the choices
    (request,) = [r for r in fake_openai.requests if r.path.endswith("/audio/speech")]
    assert request.body["voice"] == "fable"  # the storyteller's own voice


async def test_a_narrated_story_is_a_file_in_the_slack_thread(
    start_slack: StartSlack, runtime_factory: RuntimeFactory, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(Reply("Once upon a time a lighthouse keeper found a map."))
    async with runtime_factory(spec=support_spec(), parley_queue=False, **RUNTIME) as rt:
        app = await start_slack(runtime=rt)
        await app.sender.event(rq.app_mention("/story a lighthouse keeper --narrate", ts="1700000000.000100"))
        await slack.wait_for(lambda: bool(slack.uploads()))
        await app.settle()
    (upload,) = slack.uploads()
    assert upload.data.startswith(RIFF)
    assert (upload.channel, upload.thread_ts) == ("C0GENERAL", "1700000000.000100")


async def test_a_discord_voice_message_is_answered_from_its_transcript(
    bot_factory: BotFactory, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    fake_openai.transcript = "what is the capital of France"
    fake_openai.queue(Reply("Paris!"))
    clip = wav(1.0)
    async with bot_factory() as bot:
        rt = bot.runtime
        await fake.send_message(
            "", mention_bot=True, attachments=[("voice-message.ogg", clip, "audio/ogg")], flags=1 << 13
        )
        await fake.wait_for(lambda: any(m["content"].startswith("Paris!") for m in fake.bot_messages()))
        key = rt.keys.messages(Place("discord", fake.guild_id, fake.general["id"]))
        for _ in range(200):  # the fenced write lands just after the last edit
            memory = await rt.redis.lrange(key, 0, -1)
            if len(memory) >= 2:
                break
            await asyncio.sleep(0.02)
    assert fake_openai.heard == [len(clip)]  # the very clip was sent for transcription
    assert "what is the capital of France" in last_user_text(fake_openai.chat_requests[-1].body)
    assert any("I heard: “what is the capital of France”" in m["content"] for m in fake.bot_messages())
    user_line = next(m for m in memory if "capital of France" in m)
    assert "[voice message: voice-message.ogg id " in user_line and "RIFF" not in user_line


async def test_a_slack_audio_clip_is_answered_from_its_transcript(
    start_slack: StartSlack, slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.transcript = "how do I reset my password"
    fake_openai.queue(Reply("Use the 'Forgot password' link on the sign-in page."))
    app = await start_slack()
    shared = slack.add_file("audio_message.webm", wav(2.0), "audio/webm")
    shared["subtype"] = "slack_audio"
    event = rq.app_mention("")
    event["event"]["files"] = [shared]
    event["event"]["subtype"] = "file_share"
    await app.sender.event(event)
    await app.settle()
    assert slack.file_downloads == [(shared["id"], slack.bot_token)]  # url_private with the bot token
    assert "reset my password" in last_user_text(fake_openai.chat_requests[-1].body)
    shown = [m.shown for m in slack.bot_messages("C0GENERAL")]
    assert any("I heard" in s and "reset my password" in s for s in shown)
    assert any("Forgot password" in s for s in shown)


async def test_clips_over_the_limits_and_servers_without_transcription(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    spec = with_audio(load_bot("arcade"), max_seconds=5)
    long_clip = tmp_path / "long.wav"
    long_clip.write_bytes(wav(6.0))
    short_clip = tmp_path / "short.wav"
    short_clip.write_bytes(wav(0.5))
    async with runtime_factory(spec=spec) as rt:
        out = io.StringIO()
        chat = ConsoleChat(
            rt.bot, rt.engine.reply, ConsoleOptions(files_dir=tmp_path, jsonl=True), stdout=out
        )
        too_long = await chat.say("", audio=(AudioRef(url=f"file://{long_clip}", name="long.wav"),))
        assert too_long.kind is ReplyKind.REFUSAL and "5 seconds" in too_long.text
        assert fake_openai.heard == []  # read and measured locally, never sent
        fake_openai.audio_behaviour = Error(404, "not found")
        missing = await chat.say("", audio=(AudioRef(url=f"file://{short_clip}", name="short.wav"),))
        assert missing.text == NO_TRANSCRIPTION


async def test_the_terminal_sends_a_clip_and_saves_what_it_speaks(
    runtime_factory: RuntimeFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    clip = tmp_path / "question.wav"
    clip.write_bytes(wav(0.5))
    fake_openai.transcript = "tell me a joke"
    fake_openai.queue(Reply("Why did the bicycle fall over? It was two tired."))
    async with runtime_factory(spec=with_audio(load_bot("arcade"))) as rt:
        out = io.StringIO()
        chat = ConsoleChat(
            rt.bot,
            rt.engine.reply,
            ConsoleOptions(files_dir=tmp_path / "files", audio=clip),
            stdin=io.StringIO("/speak a short line\n"),
            stdout=out,
        )
        assert await chat.serve() == 0
    shown = out.getvalue()
    assert "I heard: “tell me a joke”" in shown and "two tired" in shown
    (saved,) = list((tmp_path / "files").iterdir())
    assert saved.read_bytes().startswith(RIFF)
    assert f"[file saved: {saved.resolve()}]" in shown
