"""``/forget``: delete everything stored about one user on one platform.

The memory keeps a per-user index of the conversations a user wrote in (``KeySpace.user_conversations``).
For each of them one Lua script (atomic, one Cluster slot: the conversation's keys share a hash tag) removes
the user's messages and the bot's replies to them (same turn id). A conversation left without anyone else's
messages is deleted whole (messages, summary, persona, settings); a shared one keeps the other people's
messages but loses its running summary and last story (they may quote the user). Then the index and the
user's moderation events go.

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
from core.safety.events import EventLog

FORGET_CONVERSATION = """
local user = ARGV[1]
local raw = redis.call('LRANGE', KEYS[1], 0, -1)
local decoded = {}
local turns = {}
for i, item in ipairs(raw) do
  local sep = string.find(item, '|', 1, true)
  local ok, msg = pcall(cjson.decode, string.sub(item, (sep or 0) + 1))
  if ok and type(msg) == 'table' then
    decoded[i] = msg
    if msg['a'] == user and type(msg['u']) == 'string' and msg['u'] ~= '' then turns[msg['u']] = true end
  end
end
local keep = {}
local others = 0
local removed = 0
for i, item in ipairs(raw) do
  local msg = decoded[i]
  if msg and (msg['a'] == user or (type(msg['u']) == 'string' and turns[msg['u']])) then
    removed = removed + 1
  else
    keep[#keep + 1] = item
    if msg and msg['r'] == 'user' then others = others + 1 end
  end
end
if others == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return {removed, 1}
end
if removed > 0 then
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1])
  for i = 1, #keep, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(keep, i, math.min(i + 999, #keep)))
  end
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
redis.call('HDEL', KEYS[2], 'summary', 'last_story')
if redis.call('HGET', KEYS[2], 'paused_by') == user then redis.call('HDEL', KEYS[2], 'paused_by') end
return {removed, 0}
"""
"""KEYS: messages list, meta hash, fold lock. ARGV: user id. Returns {messages removed, deleted whole 0/1}."""


@dataclass(frozen=True, slots=True)
class Forgotten:
    conversations: int = 0  # conversations the user wrote in
    deleted: int = 0  # of which deleted whole
    messages: int = 0  # messages removed (theirs and the replies to them)
    events: int = 0  # moderation events removed


class Forgetter:
    def __init__(self, client: aioredis.Redis, keys: KeySpace, events: EventLog) -> None:
        self._r = client
        self._keys = keys
        self._events = events
        self._script = client.register_script(FORGET_CONVERSATION)

    async def forget(self, platform: str, user_id: str) -> Forgotten:
        index = self._keys.user_conversations(platform, user_id)
        try:
            members: Any = await self._r.smembers(index)
            conversations = sorted(str(m) for m in members)
            deleted = messages = 0
            for conv in conversations:
                # index members are conversation key prefixes: "<prefix>:<bot>:{<conversation id>}"
                removed, whole = await self._script(
                    keys=[conv + ":msgs", conv + ":meta", conv + ":fold"], args=[user_id]
                )
                messages += int(removed)
                deleted += int(whole)
            await self._r.delete(index)
            events = await self._events.forget_user(platform, user_id)
        except RedisError as exc:
            raise StoreError(f"forget: {type(exc).__name__}: {exc}") from exc
        return Forgotten(len(conversations), deleted, messages, events)
