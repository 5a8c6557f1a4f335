"""The one exception root of Parley.

    ParleyError
    +-- ConfigError            bad settings, bot or persona files (named field, exit non-zero)
    +-- StoreError             Redis failed
    |   +-- StoreUnavailable   cannot reach Redis at all
    |   +-- LeaseLost          a conversation lock's lease expired before the turn's final write
    |   +-- CredentialError    a stored credential cannot be decrypted (a retired key, or altered)
    +-- LLMError               the language model failed
    |   +-- LLMUnavailable     connection refused, 5xx after retries, circuit open
    |   +-- LLMRateLimited     429 after retries
    |   +-- LLMTimeout         no first token / no completion within the deadline
    |   +-- ContextTooLong     the prompt exceeded the model's context window
    |   +-- LLMRejected        any other 4xx (bad model name, bad key)
    +-- ModerationError        the moderation service failed
    +-- ToolError              a tool call failed (the model is told, the turn goes on)
    |   +-- ToolUnavailable    its MCP server is not connected
    |   +-- ToolTimeout        it did not answer within the per-tool timeout
    +-- AdapterError           a platform call failed in a way the adapter cannot absorb
    +-- MediaError             an image could not be fetched or made
        +-- ImageRejected      an attachment's type or size is not accepted
        +-- ImagesUnsupported  the endpoint has no Images API (404/405/501)

Library errors are mapped at the edge with ``raise ... from``.
"""

from __future__ import annotations


class ParleyError(Exception):
    """Root of every error Parley raises on purpose."""


class ConfigError(ParleyError):
    """A setting, bot file or persona file is wrong. The message names the field."""


class StoreError(ParleyError):
    """Redis returned an error or the connection broke mid-command."""


class StoreUnavailable(StoreError):
    """Redis cannot be reached."""


class LeaseLost(StoreError):
    """The conversation lock this turn held expired (another replica may own the conversation now)."""


class CredentialError(StoreError):
    """A stored credential cannot be opened: sealed with a key no longer configured, or altered."""


class LLMError(ParleyError):
    """The language model call failed."""


class LLMUnavailable(LLMError):
    """Connection refused, DNS failure or 5xx after retries."""


class LLMRateLimited(LLMError):
    """The endpoint kept answering 429."""


class LLMTimeout(LLMError):
    """No answer within the configured deadline."""


class ContextTooLong(LLMError):
    """The prompt did not fit the model's context window."""


class LLMRejected(LLMError):
    """The endpoint refused the request (bad model, bad key, bad parameter)."""


class ModerationError(ParleyError):
    """The moderation service failed or timed out."""


class ToolError(ParleyError):
    """A tool call failed; the message is safe to show the model (never the arguments)."""


class ToolUnavailable(ToolError):
    """The tool's MCP server is not connected (it is being reconnected)."""


class ToolTimeout(ToolError):
    """The tool did not answer within its timeout."""


class AdapterError(ParleyError):
    """A platform call failed and could not be retried."""


class MediaError(ParleyError):
    """An image could not be fetched (attachment) or generated (``/imagine``). The message is safe to log."""


class ImageRejected(MediaError):
    """An attachment's type or size is outside the bot's ``[images]`` limits."""


class ImagesUnsupported(MediaError):
    """The configured endpoint has no Images API (404, 405 or 501)."""


class AudioUnsupported(MediaError):
    """Neither the speech endpoint nor a local engine (espeak-ng) can make audio; or no transcription API."""
