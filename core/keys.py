"""Redis key names. One conversation's keys share a ``{hash tag}`` so they sit in one Cluster slot."""

from __future__ import annotations

from dataclasses import dataclass

from core.types import Place


@dataclass(frozen=True, slots=True)
class KeySpace:
    bot: str
    prefix: str = "parley"

    def conversation(self, place: Place) -> str:
        return f"{self.prefix}:{self.bot}:{{{place.conversation_id}}}"

    def conversation_prefix(self, platform: str) -> str:
        """What every conversation key of ``platform`` starts with (for SCAN patterns)."""
        return f"{self.prefix}:{self.bot}:{{{Place(platform, '', '', '').conversation_id.split(':')[0]}:"

    def messages(self, place: Place) -> str:
        return self.conversation(place) + ":msgs"

    def meta(self, place: Place) -> str:
        return self.conversation(place) + ":meta"

    def authors(self, place: Place) -> str:
        """The ids of everyone who wrote in the conversation (for /forget)."""
        return self.conversation(place) + ":authors"

    def fold_lock(self, place: Place) -> str:
        return self.conversation(place) + ":fold"

    def dedupe(self, place: Place, event_id: str) -> str:
        """A platform event seen once. In the conversation's slot, so a Redis Cluster enqueues a turn (dedupe,
        inbox) with one script."""
        return f"{self.conversation(place)}:dedupe:{event_id}"

    def user_conversations(self, platform: str, user_id: str) -> str:
        return f"{self.prefix}:{self.bot}:user:{platform}:{user_id}:convs"

    def user_data(self, platform: str, user_id: str) -> str:
        """A set naming what else is stored about a user outside conversations (a feedback vote, a cached
        display name): entries from :func:`user_data_entry`, erased by ``/forget``."""
        return f"{self.prefix}:{self.bot}:user:{platform}:{user_id}:data"

    def blocked_version(self) -> str:
        """Bumped whenever a blocked-users set changes. In the queue stream's slot (the hash tag is the
        stream's whole name), so a Cluster worker reads it with every XREADGROUP (core/safety/views.py)."""
        return "{" + self.scoped("queue") + "}:blocked-version"

    def scoped(self, *parts: str) -> str:
        """A key for adapter or plugin state, in this bot's namespace."""
        return ":".join((self.prefix, self.bot, *parts))


USER_DATA_TTL = 90 * 86_400  # as long as the longest-kept per-user record (feedback votes)


def user_data_entry(key: str, field: str = "") -> str:
    """An entry of :meth:`KeySpace.user_data`: a whole key, or one field of a hash (``key<TAB>field``)."""
    return f"{key}\t{field}" if field else key
