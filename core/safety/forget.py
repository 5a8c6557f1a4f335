"""``/forget``: delete everything stored about one user on one platform.

The memory keeps a per-user index of the conversations a user wrote in (``KeySpace.user_conversations``).
For each of them the stored messages are read and decoded (``core.memory.decode``), and one Lua script
(atomic, one Cluster slot: the conversation's keys share a hash tag) removes the user's messages and the bot's
replies to them (same turn id). A conversation left without anyone else's
messages loses its whole state (messages, summary, last story) but keeps the settings an admin made
(``core.memory.SETTINGS``: persona, pause; a pause no longer names the user); a shared one keeps the other
people's messages but loses its running summary and last story (they may quote the user). Then the index
and the user's moderation events go, and so does what adapters stored about the user outside conversations and
named in the user's data set (``KeySpace.user_data``: feedback votes, the cached display name), and the
user's turns still waiting in a conversation's queue inbox (their raw text; an inbox lives up to a day). The
head of an inbox is left: it is being answered (it may be this very ``/forget``).

Not touched, on purpose: rate-limit and quota counters (keyed by a one-way hash, expiring within their
window, so that ``/forget`` cannot reset a limit) and the admins' blocked-users lists. Dedupe keys hold
no user data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.errors import StoreError
from core.keys import KeySpace
from core.memory import CLEAR_STATE_LUA, decode_entries, own_entries
from core.ops.jobs import decode_job
from core.safety.events import EventLog

REMOVE = (
    CLEAR_STATE_LUA
    + """
local removed = 0
for i = 2, #ARGV do
  removed = removed + redis.call('LREM', KEYS[1], 1, ARGV[i])
end
if redis.call('HGET', KEYS[2], 'paused_by') == ARGV[1] then redis.call('HDEL', KEYS[2], 'paused_by') end
if redis.call('LLEN', KEYS[1]) == 0 then
  clear_state(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  return {removed, 1}
end
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[2], 'summary', 'last_story')
return {removed, 0}
"""
)
"""KEYS: messages list, meta hash, fold lock, authors set. ARGV: user id, then the stored entries to remove
(each one unique: it starts with its sequence number). Messages appended meanwhile stay.
Returns {removed, deleted whole 0/1}."""


@dataclass(frozen=True, slots=True)
class Forgotten:
    conversations: int = 0  # conversations the user wrote in
    deleted: int = 0  # of which deleted whole
    messages: int = 0  # messages removed (theirs, the replies to them, and lone conversations whole)
    events: int = 0  # moderation events removed
    records: int = 0  # other records removed (feedback votes, cached names, queued turns)


class Forgetter:
    def __init__(self, client: aioredis.Redis, keys: KeySpace, events: EventLog) -> None:
        self._r = client
        self._keys = keys
        self._events = events
        self._remove = client.register_script(REMOVE)

    async def _conversations(self, index: str, platform: str, user_id: str) -> list[str]:
        """The user's index, plus every conversation whose authors set names them: the index expires with
        the user's own last message, while a conversation others keep alive may still hold their words."""
        members: Any = await self._r.smembers(index)
        found = {str(m) for m in members}
        glob = str.maketrans({c: "\\" + c for c in "*?[]\\"})
        pattern = f"{self._keys.conversation_prefix(platform).translate(glob)}*:authors"
        async for key in self._r.scan_iter(match=pattern, count=1000):
            conv = str(key)[: -len(":authors")]
            if conv not in found and await self._r.sismember(key, user_id):
                found.add(conv)
        return sorted(found)

    async def forget(self, platform: str, user_id: str) -> Forgotten:
        index = self._keys.user_conversations(platform, user_id)
        try:
            conversations = await self._conversations(index, platform, user_id)
            deleted = messages = 0
            for conv in conversations:
                # index members are conversation key prefixes (KeySpace.conversation): "<...>:{<conv id>}"
                keys = [conv + ":msgs", conv + ":meta", conv + ":fold", conv + ":authors"]
                raw: Any = await self._r.lrange(keys[0], 0, -1)
                doomed = self._doomed([str(r) for r in raw], user_id)
                removed, whole = await self._remove(keys=keys, args=[user_id, *doomed])
                messages += int(removed)
                deleted += int(whole)
            await self._r.delete(index)
            events = await self._events.forget_user(platform, user_id)
            records = await self._user_data(platform, user_id) + await self._queued(platform, user_id)
        except RedisError as exc:
            raise StoreError(f"forget: {type(exc).__name__}: {exc}") from exc
        return Forgotten(len(conversations), deleted, messages, events, records)

    async def _user_data(self, platform: str, user_id: str) -> int:
        """Erase what the user's data set names: whole keys, or one field of a hash (``key<TAB>field``)."""
        index = self._keys.user_data(platform, user_id)
        entries: Any = await self._r.smembers(index)
        removed = 0
        for entry in sorted(str(e) for e in entries):  # one key per command: fine on a Cluster
            key, _, field = entry.partition("\t")
            removed += int(await (self._r.hdel(key, field) if field else self._r.delete(key)))
        await self._r.delete(index)
        return removed

    async def _queued(self, platform: str, user_id: str) -> int:
        """Remove the user's turns waiting in any conversation inbox of ``platform`` (not an inbox's head)."""
        glob = str.maketrans({c: "\\" + c for c in "*?[]\\"})
        pattern = f"{self._keys.conversation_prefix(platform).translate(glob)}*:inbox"
        removed = 0
        async for key in self._r.scan_iter(match=pattern, count=1000):
            items: Any = await self._r.lrange(key, 1, -1)
            for item in (str(i) for i in items):
                try:
                    author = decode_job(item).turn.author.id
                except ValueError:
                    continue
                if author == user_id:
                    removed += int(await self._r.lrem(key, 1, item))
        return removed

    @staticmethod
    def _doomed(raw: list[str], user_id: str) -> list[str]:
        """The entries to remove: the user's messages and the replies to them (same turn id); everything when
        nobody else wrote in the conversation."""
        decoded = decode_entries(raw)  # an entry this version cannot read is left alone
        others = any(m.role == "user" and m.author_id != user_id for _, m in decoded)
        return own_entries(decoded, user_id) if others else [item for item, _ in decoded]
