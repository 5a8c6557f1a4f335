"""The Slack :class:`~adapters.common.stream.MessageSink`: post and edit one reply's messages.

Every post is threaded where the conversation is, never unfurls, and carries text already converted to
mrkdwn by :func:`~adapters.slack.mrkdwn.to_mrkdwn` (so it is escaped and mention-safe). A Slack API failure
is mapped to :class:`~core.errors.AdapterError` carrying Slack's error code.
"""

from __future__ import annotations

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.mrkdwn import to_mrkdwn
from core.errors import AdapterError

MESSAGE_LIMIT = 4_000  # chat.update rejects more (msg_too_long); keep every message within it


class SlackSink:
    """Post/edit messages of one reply in one channel (and thread)."""

    limit = MESSAGE_LIMIT

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str = "", *, limit: int = 0) -> None:
        self._client = client
        self.channel = channel
        self.thread_ts = thread_ts
        if limit:
            self.limit = limit
        self.texts: dict[str, str] = {}  # ts -> the text last written there
        self.order: list[str] = []  # message ts in posting order

    def format(self, text: str) -> str:
        return to_mrkdwn(text)

    async def post(self, text: str) -> str:
        try:
            response = await self._client.chat_postMessage(
                channel=self.channel,
                thread_ts=self.thread_ts or None,
                text=text,
                unfurl_links=False,
                unfurl_media=False,
            )
        except (SlackApiError, SlackClientError) as exc:
            raise adapter_error("chat.postMessage", exc) from exc
        ts = str(response.get("ts") or "")
        if not ts:
            raise AdapterError("chat.postMessage returned no ts")
        self.texts[ts] = text
        self.order.append(ts)
        return ts

    async def edit(self, handle: str, text: str) -> None:
        try:
            await self._client.chat_update(channel=self.channel, ts=handle, text=text)
        except (SlackApiError, SlackClientError) as exc:
            raise adapter_error("chat.update", exc) from exc
        self.texts[handle] = text
        if handle not in self.order:
            self.order.append(handle)

    async def attach_blocks(self, blocks: list[dict[str, object]], sections: list[dict[str, object]]) -> None:
        """Put ``blocks`` (feedback buttons) under the last message, keeping its text as sections."""
        if not self.order:
            return
        ts = self.order[-1]
        try:
            await self._client.chat_update(
                channel=self.channel, ts=ts, text=self.texts.get(ts, ""), blocks=[*sections, *blocks]
            )
        except (SlackApiError, SlackClientError) as exc:
            raise adapter_error("chat.update", exc) from exc


def slack_error_code(exc: BaseException) -> str:
    """Slack's ``error`` field of a failed call (``ratelimited``, ``not_in_channel``...), else the type."""
    if isinstance(exc, SlackApiError) and exc.response is not None:
        return str(exc.response.get("error", "") or f"http_{exc.response.status_code}")
    return type(exc).__name__


def adapter_error(method: str, exc: BaseException) -> AdapterError:
    """Slack SDK error -> :class:`AdapterError` naming the method and Slack's error code (never a token)."""
    return AdapterError(f"{method} failed: {slack_error_code(exc)}")
