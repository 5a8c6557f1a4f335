"""Slack's native streaming (``chat.startStream`` / ``appendStream`` / ``stopStream``) for one reply.

Native streaming takes Markdown and only appends, so the streamer sends only what can no longer change:
text up to the last whitespace (a broadcast word or ``<!…>`` is never cut in half before it is neutralised),
at most once per ``min_interval``. When it cannot go on natively it says so and the caller falls back to
post + ``chat.update`` (:class:`~adapters.common.stream.StreamRenderer`):

- ``fallback``: nothing was shown yet (the workspace has no streaming, or the reply was decided at once);
- ``handover``: the reply outgrew one message, or moderation replaced it, so the stream is stopped (a
  streaming message must never be ``chat.update``-d) and the renderer edits it from there on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

import structlog
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.common.citations import shown_text
from adapters.slack.mrkdwn import escape, sanitise_markdown
from adapters.slack.sink import slack_error_code
from core.reply import ReplyFold
from core.types import ReplyEvent, ReplyNotice, ReplyReplace, ReplyResult

log = structlog.get_logger("parley.slack.stream")

# Errors of chat.startStream meaning "this workspace/app cannot stream": remembered, not retried.
UNSUPPORTED = frozenset(
    {
        "unknown_method",
        "method_deprecated",
        "missing_scope",
        "not_allowed_token_type",
        "feature_not_enabled",
        "team_not_enabled",
        "not_supported",
    }
)

Status = Literal["done", "fallback", "handover", "failed"]


@dataclass
class NativeOutcome:
    status: Status
    text: str = ""  # the raw reply text (model Markdown) as far as it was read
    ts: str = ""  # the streamed message, if one was started
    result: ReplyResult | None = None  # set when the stream's ReplyDone was consumed
    error: str = ""
    unsupported: bool = False


def stable_prefix(text: str) -> str:
    """Text up to and including its last whitespace: what later deltas can no longer change."""
    cut = max(text.rfind(" "), text.rfind("\n"))
    return text[: cut + 1]


class NativeStreamer:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        channel: str,
        thread_ts: str,
        team_id: str,
        user_id: str,
        limit: int,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._channel = channel
        self._thread_ts = thread_ts
        self._team_id = team_id
        self._user_id = user_id
        self._limit = limit
        self._interval = min_interval
        self._clock = clock
        self.calls = 0

    async def run(
        self,
        events: AsyncIterator[ReplyEvent],
        blocks_for: Callable[[ReplyResult], list[dict[str, object]]],
    ) -> NativeOutcome:
        fold = ReplyFold()
        sent = ""
        ts = ""
        last = float("-inf")
        async for event in events:
            if isinstance(event, ReplyNotice):
                await self._notice(event.text)
                continue
            fold.add(event)
            raw = fold.shown
            if fold.result is not None:
                return await self._finish(fold.result, sent, ts, blocks_for)
            if isinstance(event, ReplyReplace):
                if ts:
                    return await self._handover(raw, ts, None)
                continue
            text = sanitise_markdown(raw)
            if len(text) > self._limit:
                return await self._handover(raw, ts, None) if ts else NativeOutcome("fallback", raw)
            if self._clock() - last < self._interval:
                continue
            delta = stable_prefix(text)[len(sent) :]
            if not delta.strip():
                continue
            try:
                if not ts:
                    ts = await self._start(delta)
                else:
                    await self._append(ts, delta)
            except (SlackApiError, SlackClientError) as exc:
                code = slack_error_code(exc)
                if not ts:
                    return NativeOutcome("fallback", raw, error=code, unsupported=code in UNSUPPORTED)
                return await self._handover(raw, ts, None, error=code)
            sent += delta
            last = self._clock()
        # The engine always ends with ReplyDone; if it did not, close what we opened.
        if ts:
            return await self._handover(fold.shown, ts, None)
        return NativeOutcome("fallback", fold.shown)

    async def _notice(self, text: str) -> None:
        """A word beside the reply (a long wait), posted in the thread as a plain message."""
        try:
            self.calls += 1
            await self._client.chat_postMessage(
                channel=self._channel,
                thread_ts=self._thread_ts or None,
                text=escape(text),
                unfurl_links=False,
                unfurl_media=False,
            )
        except (SlackApiError, SlackClientError) as exc:
            log.warning("slack_notice_failed", error=slack_error_code(exc), channel=self._channel)

    async def _start(self, text: str) -> str:
        self.calls += 1
        response = await self._client.chat_startStream(
            channel=self._channel,
            thread_ts=self._thread_ts,
            markdown_text=text,
            recipient_team_id=self._team_id or None,
            recipient_user_id=self._user_id or None,
        )
        ts = str(response.get("ts") or "")
        if not ts:
            raise SlackClientError("chat.startStream returned no ts")
        return ts

    async def _append(self, ts: str, text: str) -> None:
        self.calls += 1
        await self._client.chat_appendStream(channel=self._channel, ts=ts, markdown_text=text)

    async def _finish(
        self,
        result: ReplyResult,
        sent: str,
        ts: str,
        blocks_for: Callable[[ReplyResult], list[dict[str, object]]],
    ) -> NativeOutcome:
        text = sanitise_markdown(shown_text(result))  # the sources line comes after the streamed text
        if not ts:
            # Decided before anything streamed (a command, a refusal, a duplicate): one plain post is cheaper.
            return NativeOutcome("fallback", result.text, result=result)
        if len(text) > self._limit or not text.startswith(sent):
            return await self._handover(result.text, ts, result)
        rest = text[len(sent) :]
        try:
            self.calls += 1
            await self._client.chat_stopStream(
                channel=self._channel, ts=ts, markdown_text=rest or None, blocks=blocks_for(result) or None
            )
        except (SlackApiError, SlackClientError) as exc:
            return NativeOutcome("failed", result.text, ts, result, error=slack_error_code(exc))
        return NativeOutcome("done", result.text, ts, result)

    async def _handover(
        self, raw: str, ts: str, result: ReplyResult | None, *, error: str = ""
    ) -> NativeOutcome:
        try:
            self.calls += 1
            await self._client.chat_stopStream(channel=self._channel, ts=ts)
        except (SlackApiError, SlackClientError) as exc:
            code = slack_error_code(exc)
            if code != "message_not_in_streaming_state":
                log.warning("slack_stream_stop_failed", error=code, channel=self._channel)
        return NativeOutcome("handover", raw, ts, result, error=error)
