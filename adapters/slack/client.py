"""The one way Parley builds a Slack Web API client: base URL from settings, retries on 429 and 5xx.

slack_sdk retries only connection errors by default. Every client here also retries rate limits
(honouring ``Retry-After``) and 500/503 with backoff, so a busy channel delays a reply instead of losing it.
"""

from __future__ import annotations

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
    """``AsyncWebClient`` whose ``oauth.v2.access`` sends the client credentials in the form body.

    slack_sdk sends them with ``aiohttp.BasicAuth``, deprecated in aiohttp 3.14 and gone in 4.0; Slack
    accepts ``client_id`` / ``client_secret`` as POST parameters just as well.
    """

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


def web_client(token: str | None, base_url: str) -> AsyncWebClient:
    """An ``AsyncWebClient`` pointed at ``base_url`` (``SLACK_API_URL``) with Parley's retry handlers."""
    if not base_url.endswith("/"):
        base_url += "/"
    return ParleyWebClient(token=token, base_url=base_url, timeout=TIMEOUT, retry_handlers=retry_handlers())


def webhook_client(url: str) -> AsyncWebhookClient:
    """A client for a slash command's ``response_url``, with the same retries."""
    return AsyncWebhookClient(url, timeout=TIMEOUT, retry_handlers=retry_handlers())
