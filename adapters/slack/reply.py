"""Render one engine reply stream into a Slack channel or thread.

Native streaming first where it can work (a threaded reply, streaming enabled, the workspace not known to
lack it), else one early ``chat.postMessage`` and paced ``chat.update`` through the shared
:class:`~adapters.common.stream.StreamRenderer`, split at 4,000 chars with balanced fences. Answers get the
👍/👎 buttons. A reply that could not be delivered is logged with its conversation, never dropped silently.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog
from slack_sdk.web.async_client import AsyncWebClient

from adapters.common.stream import StreamRenderer
from adapters.slack.confirm import confirm_blocks
from adapters.slack.sink import SlackSink
from adapters.slack.streaming import NativeOutcome, NativeStreamer
from adapters.slack.translate import feedback_blocks, section_blocks
from core.errors import AdapterError
from core.types import ReplyDone, ReplyEvent, ReplyKind, ReplyReplace, ReplyResult

log = structlog.get_logger("parley.slack.reply")


@dataclass
class ReplyOptions:
    native: bool = True  # try chat.startStream for threaded replies
    feedback: bool = True
    min_interval: float = 1.0
    limit: int = 4_000


@dataclass
class Rendered:
    result: ReplyResult | None = None
    messages: list[str] = field(default_factory=list)  # ts of the messages carrying the reply
    failures: int = 0
    native: bool = False
    native_unsupported: bool = False

    @property
    def delivered(self) -> bool:
        wanted = self.result is not None and bool(self.result.text.strip())
        return self.failures == 0 and (bool(self.messages) or not wanted)


async def _prepend(first: list[ReplyEvent], rest: AsyncIterator[ReplyEvent]) -> AsyncIterator[ReplyEvent]:
    for event in first:
        yield event
    async for event in rest:
        yield event


def _wants_feedback(result: ReplyResult | None, options: ReplyOptions) -> bool:
    if not options.feedback or result is None or result.kind is not ReplyKind.ANSWER:
        return False
    return bool(result.text) and not result.handoff


def _blocks(result: ReplyResult | None, options: ReplyOptions) -> list[dict[str, object]]:
    """Buttons under the last message: confirm / cancel for a proposed tool call, else 👍/👎."""
    if result is not None and (question := result.question) is not None:
        return confirm_blocks(question.id)
    return feedback_blocks(result.turn_id) if result is not None and _wants_feedback(result, options) else []


async def render_reply(
    client: AsyncWebClient,
    events: AsyncIterator[ReplyEvent],
    *,
    channel: str,
    thread_ts: str,
    team_id: str,
    user_id: str,
    options: ReplyOptions,
    log_context: dict[str, str],
) -> Rendered:
    """Render ``events`` into ``channel`` (threaded under ``thread_ts`` when set)."""
    rendered = Rendered()
    sink = SlackSink(client, channel, thread_ts, limit=options.limit)
    renderer: StreamRenderer[str] = StreamRenderer(
        sink, min_interval=options.min_interval, log_context=log_context
    )
    stream: AsyncIterator[ReplyEvent] = events

    if options.native and thread_ts:
        streamer = NativeStreamer(
            client,
            channel=channel,
            thread_ts=thread_ts,
            team_id=team_id,
            user_id=user_id,
            limit=options.limit,
            min_interval=options.min_interval,
        )

        def blocks_for(result: ReplyResult) -> list[dict[str, object]]:
            return _blocks(result, options)

        native: NativeOutcome = await streamer.run(events, blocks_for)
        rendered.native_unsupported = native.unsupported
        if native.status == "done":
            rendered.native = True
            rendered.result = native.result
            rendered.messages = [native.ts]
            return rendered
        if native.status == "failed":
            rendered.native = True
            rendered.result = native.result
            rendered.messages = [native.ts]
            rendered.failures = 1
            log.error("reply_undeliverable", error=native.error, stage="stopStream", **log_context)
            return rendered
        if native.error:
            log.info("slack_native_stream_fallback", error=native.error, **log_context)
        head: list[ReplyEvent]
        if native.result is not None:
            head = [ReplyDone(native.result)]
        else:
            head = [ReplyReplace(native.text)] if native.text else []
        if native.status == "handover" and native.ts:
            rendered.native = True
            renderer.outcome.handles.append(native.ts)  # the renderer edits the stopped stream from here
            sink.order.append(native.ts)
        stream = _prepend(head, events)

    outcome = await renderer.run(stream)
    rendered.result = outcome.result
    rendered.messages = list(sink.order)
    rendered.failures = outcome.failures
    blocks = _blocks(rendered.result, options)
    if blocks and sink.order and outcome.failures == 0:
        last = sink.texts.get(sink.order[-1], "")
        try:
            await sink.attach_blocks(blocks, section_blocks(last))
        except AdapterError as exc:
            log.warning("slack_feedback_buttons_failed", error=str(exc), **log_context)
    if not rendered.delivered:
        log.error(
            "reply_undeliverable",
            failures=outcome.failures,
            posted=len(sink.order),
            chars=len(rendered.result.text) if rendered.result else 0,
            **log_context,
        )
    return rendered
