"""Where a streamed reply lands on Discord: :class:`~adapters.common.stream.MessageSink` implementations.

- :class:`ChannelSink` posts in a channel, DM or thread (the first message as a reply to the user's) and
  edits those messages.
- :class:`InteractionSink` fills a deferred slash-command response through the interaction's webhook: the
  first chunk edits the original ("thinking...") response, later chunks are follow-ups. An interaction
  token lives 15 minutes; past ``deadline`` (or when Discord says the token is gone) the rest of the reply
  goes to the channel instead, and the response points there.

Every request carries ``allowed_mentions`` that ping no one, and the text is made mention-safe and
embed-safe by :func:`~adapters.discord.format.to_discord` first.

Every message is also posted, edited and uploaded with SUPPRESS_EMBEDS (flag 4): an edit that sends
``flags`` replaces them (discord.py's ``Message.edit`` sends them cleared unless ``suppress=True``), and a
deferred interaction response is created without the flag, so each request says it again. A persona with
``link_previews = true`` turns both off once its reply is known (``previews``).
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import discord
import structlog
from discord.http import handle_message_parameters
from discord.webhook.async_ import async_context

from adapters.discord.format import to_discord
from core.tasks import wait_event
from core.types import Attachment

MESSAGE_LIMIT = 2000
NO_MENTIONS = discord.AllowedMentions.none()
_TOKEN_GONE = {10015, 50027}  # Unknown Webhook, Invalid Webhook Token
TYPING_EVERY = 8.0  # Discord shows "typing" for 10 s per trigger
MOVED = "*(continued below)*"  # what a response says once the rest of the reply had to move to the channel

log = structlog.get_logger("parley.discord")


class Previews:
    """Whether a reply's links may unfurl: no (the default), unless the persona that answered opts in.

    Shared by a sink and the delivery that learns the answering persona from the reply's result."""

    allowed: bool = False

    @property
    def suppress(self) -> bool:
        return not self.allowed


class ChannelSink:
    """Post and edit plain channel messages."""

    limit = MESSAGE_LIMIT

    def __init__(
        self,
        channel: discord.abc.Messageable,
        *,
        reply_to: discord.Message | discord.PartialMessage | None = None,
        on_first_post: Callable[[], None] | None = None,
        previews: Previews | None = None,
    ) -> None:
        self._channel = channel
        self._reply_to = reply_to
        self._on_first_post = on_first_post
        self._posted = 0
        self.previews = previews or Previews()

    def format(self, text: str) -> str:
        return to_discord(text, wrap_links=self.previews.suppress)

    async def post(self, text: str) -> discord.Message:
        reference = None
        if self._posted == 0 and self._reply_to is not None:
            reference = self._reply_to.to_reference(fail_if_not_exists=False)
        if self._posted == 0 and self._on_first_post is not None:
            self._on_first_post()
        self._posted += 1
        if reference is not None:
            return await self._channel.send(
                text,
                allowed_mentions=NO_MENTIONS,
                reference=reference,
                mention_author=False,
                suppress_embeds=self.previews.suppress,
            )
        return await self._channel.send(
            text, allowed_mentions=NO_MENTIONS, suppress_embeds=self.previews.suppress
        )

    async def edit(self, handle: discord.Message, text: str) -> None:
        await handle.edit(content=text, allowed_mentions=NO_MENTIONS, suppress=self.previews.suppress)

    async def upload(self, attachments: Sequence[Attachment]) -> None:
        """The reply's files (a generated image) as one more message, under the text."""
        await self._channel.send(
            files=discord_files(attachments),
            allowed_mentions=NO_MENTIONS,
            suppress_embeds=self.previews.suppress,
        )


def discord_files(attachments: Sequence[Attachment]) -> list[discord.File]:
    return [
        discord.File(io.BytesIO(a.data), filename=a.filename, description=a.title[:1024] or None)
        for a in attachments
    ]


@dataclass
class Slot:
    """One message of an interaction reply; re-pointed to the channel when the token has expired."""

    kind: Literal["original", "followup", "channel"]
    message: discord.Message | discord.WebhookMessage | None = None


class InteractionSink:
    """Stream into a deferred interaction response, falling back to the channel near the token's expiry.

    ``webhook`` is the interaction's webhook (application id + token), None when the token is already gone;
    ``original_id`` the deferred response message; ``channel`` where the reply continues without a token.
    """

    limit = MESSAGE_LIMIT

    def __init__(
        self,
        webhook: discord.Webhook | None,
        *,
        original_id: int,
        channel: discord.abc.Messageable,
        deadline: float,
        ephemeral: bool = False,
        clock: Callable[[], float] = time.time,
        log_context: dict[str, str] | None = None,
        previews: Previews | None = None,
    ) -> None:
        self.previews = previews or Previews()
        self._webhook = webhook
        self._original_id = original_id
        self._channel = channel
        self._deadline = deadline
        self._ephemeral = ephemeral
        self._clock = clock
        self._posted = 0
        self._gone = webhook is None  # Discord refused the token (or it expired): no more webhook calls
        self._expired = self._gone
        self._go_private = False
        self._log = log.bind(**(log_context or {}))

    def format(self, text: str) -> str:
        return to_discord(text, wrap_links=self.previews.suppress)

    def prefer_ephemeral(self) -> None:
        """The answer turned out to be for the asker only: if nothing is shown yet, show it privately."""
        if self._posted == 0 and not self._ephemeral:
            self._go_private = True

    @property
    def expired(self) -> bool:
        if not self._expired and self._clock() >= self._deadline:
            self._expired = True
            self._log.info(
                "interaction_token_expiring", fallback="ephemeral_dropped" if self._ephemeral else "channel"
            )
        return self._expired

    def _token_gone(self, exc: discord.HTTPException) -> None:
        if exc.code not in _TOKEN_GONE:
            raise exc
        self._expired = self._gone = True
        self._log.warning("interaction_token_gone", code=exc.code)

    async def _to_channel(self, text: str) -> discord.Message:
        if self._ephemeral:
            # An ephemeral answer must not become public: there is nowhere left to put it.
            raise discord.ClientException("interaction token expired; ephemeral reply not delivered")
        return await self._channel.send(
            text, allowed_mentions=NO_MENTIONS, suppress_embeds=self.previews.suppress
        )

    async def post(self, text: str) -> Slot:
        first = self._posted == 0
        self._posted += 1
        if not self.expired:
            assert self._webhook is not None
            try:
                if first and self._go_private:
                    # The deferral was public: drop its "thinking..." and answer with an ephemeral follow-up.
                    self._ephemeral = True
                    await self._webhook.delete_message(self._original_id)
                    first = False
                if first:
                    await self._edit_by_id(self._original_id, text)
                    return Slot("original")
                message = await self._webhook.send(
                    text,
                    wait=True,
                    allowed_mentions=NO_MENTIONS,
                    ephemeral=self._ephemeral,
                    suppress_embeds=self.previews.suppress,
                )
                return Slot("followup", message)
            except discord.HTTPException as exc:
                self._token_gone(exc)
        return Slot("channel", await self._to_channel(text))

    async def _edit_by_id(self, message_id: int, text: str) -> None:
        """``Webhook.edit_message`` with the message's flags: discord.py's takes none, and the deferred
        response was created without SUPPRESS_EMBEDS (Discord keeps flags an edit does not send)."""
        webhook = self._webhook
        assert webhook is not None
        assert webhook.token is not None
        flags = discord.MessageFlags(suppress_embeds=self.previews.suppress)
        with handle_message_parameters(content=text, allowed_mentions=NO_MENTIONS, flags=flags) as params:
            await async_context.get().edit_webhook_message(
                webhook.id,
                webhook.token,
                message_id,
                session=webhook.session,
                proxy=webhook.proxy,
                proxy_auth=webhook.proxy_auth,
                payload=params.payload,
            )

    async def _edit_webhook_message(self, handle: Slot, text: str) -> None:
        if handle.kind == "original":
            await self._edit_by_id(self._original_id, text)
        else:
            assert handle.message is not None
            await self._edit_by_id(handle.message.id, text)

    async def edit(self, handle: Slot, text: str) -> None:
        if handle.kind != "channel" and not self.expired:
            try:
                await self._edit_webhook_message(handle, text)
                return
            except discord.HTTPException as exc:
                self._token_gone(exc)
        if handle.kind != "channel":
            # The token is (nearly) gone: what this message should say continues as a new channel message.
            old = Slot(handle.kind, handle.message)
            handle.kind, handle.message = "channel", await self._to_channel(text)
            if not self._gone:  # still within the margin: point from the old message to the new one
                try:
                    await self._edit_webhook_message(old, MOVED)
                except discord.HTTPException as exc:
                    self._log.debug("interaction_pointer_failed", status=exc.status, code=exc.code)
            return
        assert handle.message is not None
        await handle.message.edit(content=text, allowed_mentions=NO_MENTIONS, suppress=self.previews.suppress)

    async def upload(self, attachments: Sequence[Attachment]) -> None:
        """The reply's files as a follow-up (the channel once the token is gone; never for a private one)."""
        if not self.expired:
            assert self._webhook is not None
            try:
                await self._webhook.send(
                    files=discord_files(attachments),
                    wait=True,
                    allowed_mentions=NO_MENTIONS,
                    ephemeral=self._ephemeral,
                    suppress_embeds=self.previews.suppress,
                )
                return
            except discord.HTTPException as exc:
                self._token_gone(exc)
        if self._ephemeral:
            raise discord.ClientException("interaction token expired; private files not delivered")
        await self._channel.send(
            files=discord_files(attachments),
            allowed_mentions=NO_MENTIONS,
            suppress_embeds=self.previews.suppress,
        )

    async def discard_original(self) -> None:
        """Remove the "thinking..." response of a turn that had nothing to say."""
        if self._webhook is None or self._gone:
            return
        try:
            await self._webhook.delete_message(self._original_id)
        except discord.HTTPException as exc:
            self._log.debug("interaction_cleanup_failed", status=exc.status, code=exc.code)


async def keep_typing(
    channel: discord.abc.Messageable,
    stop: asyncio.Event,
    *,
    every: float = TYPING_EVERY,
    after: float = 0.0,
) -> None:
    """Show "typing..." until ``stop`` is set, from ``after`` seconds on (a reply that shows text sooner
    never sends it). A failure (no permission) only ends the indicator."""
    if after > 0 and await wait_event(stop, after):
        return
    while not stop.is_set():
        try:
            await channel.typing()
        except discord.HTTPException as exc:
            log.debug("typing_failed", status=exc.status, code=exc.code)
            return
        await wait_event(stop, every)
