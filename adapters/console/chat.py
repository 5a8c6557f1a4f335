"""Terminal chat through the full engine (memory, persona, moderation, commands).

Interactive on a terminal (the reply streams as it is written); scripted when stdin is not a terminal: each
input line is one user message and the process ends at end of input. ``--jsonl`` prints one JSON object per
reply so the chat can be driven by another program.

When the bot proposes a side-effecting tool call (``meta["tool_confirm"]``), it asks ``Run it? [y/n]`` and the
next line answers: ``y``/``yes`` confirms, anything else cancels (as a ``/tool confirm|cancel`` turn).
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
from core.bot import BotSpec
from core.reply import ReplyFold
from core.tools.setup import confirm_call, confirm_id
from core.types import (
    Attachment,
    AudioRef,
    Author,
    CommandCall,
    Place,
    ReplyDelta,
    ReplyEvent,
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
        self._place = Place("console", "local", options.user_id, options.conversation)
        self._author = Author(options.user_id, options.user_name, is_admin=True)  # it's your own terminal

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
            pending = confirm_id(await self.say("", audio=(ref,)))
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
            pending = confirm_id(result)

    async def say(
        self, text: str, *, command: CommandCall | None = None, audio: tuple[AudioRef, ...] = ()
    ) -> ReplyResult:
        turn = Turn(author=self._author, place=self._place, text=text, command=command, audio=audio)
        streaming = not self._opt.jsonl
        if streaming and self._opt.interactive:
            self._write(f"{self._bot.config.display_name}: ")
        fold = ReplyFold()
        async for event in self._reply(turn):
            fold.add(event)
            if streaming and isinstance(event, ReplyDelta):
                self._write(event.text)
            elif streaming and isinstance(event, ReplyNotice):
                self._write(f"[{event.text}] ")
            elif streaming and isinstance(event, ReplyReplace):
                self._write(f"\n[replaced] {event.text}")
        result, shown = fold.outcome(), fold.shown
        saved = await self._save(result.attachments)
        if self._opt.jsonl:
            self._write(json.dumps({**_as_json(result), "files": saved}, ensure_ascii=False) + "\n")
            return result
        if result.text and not shown:
            self._write(result.text + "\n")
        elif shown:
            self._write("\n")
        if confirm_id(result) and not self._opt.interactive and not self._opt.jsonl:
            self._write(CONFIRM_PROMPT + "\n")
        if result.citations and not self._opt.jsonl:
            self._write(sources_plain(result.citations) + "\n")
        for path in saved:
            self._write(f"[file saved: {path}]\n")
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
        "meta": dict(result.meta),
        "citations": [{"number": c.number, "title": c.title, "url": c.url} for c in result.citations],
    }
