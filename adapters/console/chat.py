"""Terminal chat through the full engine (memory, persona, moderation, commands).

Interactive on a terminal (the reply streams as it is written); scripted when stdin is not a terminal: each
input line is one user message and the process ends at end of input. ``--jsonl`` prints one JSON object per
reply so the chat can be driven by another program.

When the bot proposes a side-effecting tool call (``ReplyResult.confirm``), it asks ``Run it? [y/n]`` and
the next line answers: ``y``/``yes`` confirms, anything else cancels (as a ``/tool confirm|cancel`` turn).

The reply is shown by :class:`ConsoleDelivery`, the terminal's steps of the one delivery path
(:mod:`adapters.common.deliver`): the text streams, files are saved under the files folder, a handoff and
notices are bracketed lines.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from adapters.common.citations import sources_plain
from adapters.common.deliver import HANDOFF_TEXT, ReplyDelivery, Shown
from core.bot import BotSpec
from core.clicks import confirm_call
from core.ops.jobs import Job, Route
from core.reply import ReplyFold
from core.types import (
    Attachment,
    AudioRef,
    Author,
    CommandCall,
    ConfirmRequest,
    Place,
    ReplyDelta,
    ReplyEvent,
    ReplyKind,
    ReplyNotice,
    ReplyReplace,
    ReplyResult,
    Turn,
)

QUIT = {"/quit", "/exit"}
YES = {"y", "yes"}
CONFIRM_PROMPT = "Run it? [y/n] "


@dataclass(frozen=True)
class ConsoleOptions:
    user_id: str = "local-user"
    user_name: str = "You"
    jsonl: bool = False
    interactive: bool = False
    conversation: str = "default"
    files_dir: Path | None = None  # where a reply's files (/imagine) are saved; None: PARLEY_DATA_DIR/images
    audio: Path | None = None  # a clip sent as the first message (``parley chat --audio FILE``)


def _reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None], stream: TextIO) -> None:
    """Read lines on a daemon thread (stdin may be a file, a pipe or a tty; none may block the loop)."""
    try:
        for line in stream:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
    finally:
        loop.call_soon_threadsafe(queue.put_nowait, None)


class ConsoleDelivery(ReplyDelivery[None]):
    """The terminal's steps: it has one place to write, so the target is None."""

    platform = "console"

    def __init__(self, chat: ConsoleChat) -> None:
        super().__init__()
        self._chat = chat
        self.saved: list[str] = []  # this reply's files, where they were saved

    async def target(self, job: Job) -> None:
        return None

    async def text(self, job: Job, target: None, events: AsyncIterator[ReplyEvent]) -> Shown:
        chat, opt = self._chat, self._chat._opt
        streaming = not opt.jsonl
        fold = ReplyFold()
        async for event in events:
            fold.add(event)
            if streaming and isinstance(event, ReplyDelta):
                chat._write(event.text)
            elif streaming and isinstance(event, ReplyNotice):
                chat._write(f"[{event.text}] ")
            elif streaming and isinstance(event, ReplyReplace):
                chat._write(f"\n[replaced] {event.text}")
        result, shown = fold.outcome(), fold.shown
        if streaming:
            if result.text and not shown:
                chat._write(result.text + "\n")
            elif shown:
                chat._write("\n")
            if result.citations:
                chat._write(sources_plain(result.citations) + "\n")
        return Shown(result)

    async def say(self, job: Job, target: None, text: str, *, private: bool = False) -> None:
        if not self._chat._opt.jsonl:  # the JSON line carries everything in --jsonl
            self._chat._write(f"[{text}]\n")

    async def files(self, job: Job, target: None, shown: Shown, files: tuple[Attachment, ...]) -> None:
        self.saved = await self._chat._save(files)
        for path in self.saved:
            await self.say(job, target, f"file saved: {path}")

    async def confirm(self, job: Job, target: None, shown: Shown, question: ConfirmRequest) -> None:
        """Interactive: the chat loop asks ``Run it? [y/n]``; scripted, the prompt is written here."""
        opt = self._chat._opt
        if not opt.interactive and not opt.jsonl:
            self._chat._write(CONFIRM_PROMPT + "\n")

    async def handoff(self, job: Job, target: None, shown: Shown) -> None:
        await self.say(job, target, HANDOFF_TEXT)


class ConsoleChat:
    def __init__(
        self,
        bot: BotSpec,
        reply: Callable[[Turn], AsyncIterator[ReplyEvent]],
        options: ConsoleOptions,
        *,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self._bot = bot
        self._reply = reply  # the engine's: one turn in, its reply stream out
        self._opt = options
        self._in = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._place = Place("console", "local", options.user_id, options.conversation, is_direct=True)
        self._author = Author(options.user_id, options.user_name, is_admin=True)  # it's your own terminal
        self._delivery = ConsoleDelivery(self)

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        threading.Thread(target=_reader, args=(loop, queue, self._in), daemon=True, name="stdin").start()
        bot = self._bot
        if self._opt.interactive:
            persona = bot.persona(None)
            self._write(f"{bot.config.display_name} ({persona.name}) — /help for commands, /quit to leave.\n")
            self._write(f"{bot.config.display_name}: {persona.greeting}\n")
        pending = ""  # a proposed tool call waiting for y/n
        if self._opt.audio is not None:  # a voice message first: the bot transcribes it and answers
            clip = self._opt.audio.resolve()
            ref = AudioRef(url=f"file://{clip}", name=clip.name, id=clip.name)
            first = await self.say("", audio=(ref,))
            pending = first.question.id if first.question is not None else ""
        while True:
            if self._opt.interactive:
                self._write(CONFIRM_PROMPT if pending else f"\n{self._opt.user_name}> ")
            line = await queue.get()
            if line is None or line.strip() in QUIT:
                if self._opt.interactive:
                    self._write("\n")
                return 0
            if pending:
                call = confirm_call(pending, line.strip().lower() in YES)
                result = await self.say(f"/{call.name} {call.args}", command=call)
            elif not line.strip():
                continue
            else:
                result = await self.say(line)
            pending = result.question.id if result.question is not None else ""

    async def say(
        self, text: str, *, command: CommandCall | None = None, audio: tuple[AudioRef, ...] = ()
    ) -> ReplyResult:
        turn = Turn(author=self._author, place=self._place, text=text, command=command, audio=audio)
        if not self._opt.jsonl and self._opt.interactive:
            self._write(f"{self._bot.config.display_name}: ")
        self._delivery.saved = []
        shown = await self._delivery.show(Job(turn, Route("console")), self._reply(turn))
        result = shown or ReplyResult(turn.turn_id, ReplyKind.ERROR, "")
        if self._opt.jsonl:
            saved = self._delivery.saved
            self._write(json.dumps({**_as_json(result), "files": saved}, ensure_ascii=False) + "\n")
        return result

    async def _save(self, attachments: tuple[Attachment, ...]) -> list[str]:
        """Write a reply's files under the files folder (a thread: no blocking file I/O in the loop)."""
        folder = self._opt.files_dir or Path(".parley") / "files"
        paths = []
        for a in attachments:
            path = folder / Path(a.filename).name  # a bare file name: nothing outside the folder
            await asyncio.to_thread(_write_file, path, a.data)
            paths.append(str(path.resolve()))
        return paths


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _as_json(result: ReplyResult) -> dict[str, object]:
    return {
        "reply": result.text,
        "kind": result.kind.value,
        "persona": result.persona,
        "finish_reason": result.finish_reason,
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
        },
        "turn_id": result.turn_id,
        "confirm": (
            {"id": result.question.id, "tool": result.question.tool, "arguments": result.question.arguments}
            if result.question is not None
            else None
        ),
        "choices": [{"number": c.number, "label": c.label} for c in result.choices],
        "notices": [{"text": n.text, "audience": n.audience.value} for n in result.notices],
        "handoff": result.handoff,
        "flag": result.flag,
        "citations": [{"number": c.number, "title": c.title, "url": c.url} for c in result.citations],
    }
