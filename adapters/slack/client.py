"""The one way Parley builds a Slack Web API client: base URL from settings, retries on 429 and 5xx.

slack_sdk retries only connection errors by default. Every client here also retries rate limits
(honouring ``Retry-After``) and 500/503 with backoff, so a busy channel delays a reply instead of losing it.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

RATE_LIMIT_RETRIES = 3
SERVER_ERROR_RETRIES = 2
CONNECTION_RETRIES = 2
TIMEOUT = 30  # seconds per call


def retry_handlers() -> list[AsyncRetryHandler]:
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=CONNECTION_RETRIES),
        AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        AsyncServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES),
    ]


class ParleyWebClient(AsyncWebClient):
    """``AsyncWebClient`` whose ``oauth.v2.access`` sends the client credentials in the form body, and which
    can keep its connections alive.

    slack_sdk sends the credentials with ``aiohttp.BasicAuth``, deprecated in aiohttp 3.14 and gone in 4.0;
    Slack accepts ``client_id`` / ``client_secret`` as POST parameters just as well.

    Without a session slack_sdk opens a new ``aiohttp.ClientSession`` (a new TCP and TLS connection) for every
    call and closes it after. With ``keep_alive`` the client opens one session on its first call (inside the
    event loop) and reuses its pooled connections until :meth:`aclose`; bolt's per-request clients borrow
    it too (they copy ``session``). Whoever makes a keep-alive client closes it.
    """

    def __init__(self, *args: Any, keep_alive: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_alive = keep_alive

    async def _request(self, *, http_verb: str, api_url: str, req_args: dict[str, Any]) -> dict[str, Any]:
        if self._keep_alive and (self.session is None or self.session.closed):
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        result: dict[str, Any] = await super()._request(
            http_verb=http_verb, api_url=api_url, req_args=req_args
        )
        return result

    async def aclose(self) -> None:
        """Close the kept-alive session (later calls open one per call again). Idempotent."""
        self._keep_alive = False
        session, self.session = self.session, None
        if session is not None:
            await session.close()

    async def oauth_v2_access(
        self,
        *,
        client_id: str,
        client_secret: str,
        code: str | None = None,
        redirect_uri: str | None = None,
        grant_type: str | None = None,
        refresh_token: str | None = None,
        **kwargs: object,
    ) -> AsyncSlackResponse:
        data: dict[str, object] = {"client_id": client_id, "client_secret": client_secret, **kwargs}
        optional = {"code": code, "redirect_uri": redirect_uri, "grant_type": grant_type}
        optional["refresh_token"] = refresh_token
        data.update({k: v for k, v in optional.items() if v is not None})
        return await self.api_call("oauth.v2.access", data=data)


def web_client(token: str | None, base_url: str, *, keep_alive: bool = False) -> ParleyWebClient:
    """An ``AsyncWebClient`` pointed at ``base_url`` (``SLACK_API_URL``) with Parley's retry handlers;
    ``keep_alive``: one pooled session for all its calls (then ``aclose()`` it)."""
    if not base_url.endswith("/"):
        base_url += "/"
    return ParleyWebClient(
        token=token,
        base_url=base_url,
        timeout=TIMEOUT,
        retry_handlers=retry_handlers(),
        keep_alive=keep_alive,
    )


def webhook_client(url: str) -> AsyncWebhookClient:
    """A client for a slash command's ``response_url``, with the same retries."""
    return AsyncWebhookClient(url, timeout=TIMEOUT, retry_handlers=retry_handlers())
