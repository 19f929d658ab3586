"""The webhook outbox in Redis: the same queues as the SQLite backend, kept by Lua scripts.

Layout (prefix `webhook_outbox:`; `h(x)` = sha1 hex of x, so URLs and keys never clash):
  seq                      INCR counter: the records' order
  e:<seq>                  HASH one record: m (JSON of the fixed fields), body, enqueued_at,
                           attempts, last_error, died_at (dead ones); destination, key
  q:<h(dest \\n key)>       ZSET one queue: member = score = seq
  ready:<h(dest)>          ZSET the destination's queues: member = key, score = ready_at
  owner:<h(dest)>          HASH key -> lease holder (while a sender holds the queue)
  dests                    SET destinations with queues
  dead                     ZSET dead letters by seq
  count                    HASH "p:<dest>" / "d:<dest>" -> pending / dead records

Every state change is one script, so several server processes can share the outbox: a queue is
taken by whoever wins `claim`, and a holder that dies leaves a lease that simply runs out. The
scripts build key names at run time, so this needs a single Redis (not Redis Cluster). Durable as
far as Redis is: run it with `appendonly yes` to keep the outbox across a Redis restart.
`append` uses a synchronous client (one round trip) because the event bus is synchronous.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

from .outbox import Appended, OutboxCounts, OutboxEntry, OutboxRecord

PREFIX = "webhook_outbox:"

_LIB = """
local P = KEYS[1]
local FIELDS = {'m', 'body', 'enqueued_at', 'attempts', 'last_error', 'died_at'}
local function qkey(dest, key) return P .. 'q:' .. redis.sha1hex(dest .. '\\n' .. key) end
local function rkey(dest) return P .. 'ready:' .. redis.sha1hex(dest) end
local function okey(dest) return P .. 'owner:' .. redis.sha1hex(dest) end
local function next_or_drop(dest, key, lease)
  local s = redis.call('ZRANGE', qkey(dest, key), 0, 0)
  if #s == 0 then
    redis.call('ZREM', rkey(dest), key)
    redis.call('HDEL', okey(dest), key)
    if redis.call('ZCARD', rkey(dest)) == 0 then redis.call('SREM', P .. 'dests', dest) end
    return false
  end
  redis.call('ZADD', rkey(dest), lease, key)
  return {s[1], redis.call('HMGET', P .. 'e:' .. s[1], unpack(FIELDS))}
end
"""

_APPEND = _LIB + """
local now, owner, lease = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV, 5 do
  local dest, key, held = ARGV[i], ARGV[i + 1], ARGV[i + 4] == '1'
  local seq = redis.call('INCR', P .. 'seq')
  redis.call('HSET', P .. 'e:' .. seq, 'destination', dest, 'key', key, 'm', ARGV[i + 2],
    'body', ARGV[i + 3], 'enqueued_at', now, 'attempts', 0, 'last_error', '')
  redis.call('ZADD', qkey(dest, key), seq, seq)
  local new = redis.call('ZADD', rkey(dest), 'NX', held and lease or now, key)
  if new == 1 and held then
    redis.call('HSET', okey(dest), key, owner)
    out[#out + 1] = seq
  else
    out[#out + 1] = -new  -- -1: a new queue nobody holds, 0: an existing queue
  end
  redis.call('SADD', P .. 'dests', dest)
  redis.call('HINCRBY', P .. 'count', 'p:' .. dest, 1)
end
return out
"""

_CLAIM = _LIB + """
local dest, key, now, lease, owner = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local score = redis.call('ZSCORE', rkey(dest), key)
if not score or tonumber(score) > now then return false end
redis.call('ZADD', rkey(dest), lease, key)
redis.call('HSET', okey(dest), key, owner)
return next_or_drop(dest, key, lease)
"""

_ADVANCE = _LIB + """
local seq, dest, key, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('ZREM', qkey(dest, key), seq) == 1 then
  redis.call('DEL', P .. 'e:' .. seq)
  redis.call('HINCRBY', P .. 'count', 'p:' .. dest, -1)
end
return next_or_drop(dest, key, lease)
"""

_DEAD = _LIB + """
local seq, dest, key, reason, now, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('ZREM', qkey(dest, key), seq) == 1 then
  redis.call('HINCRBY', P .. 'e:' .. seq, 'attempts', 1)
  redis.call('HSET', P .. 'e:' .. seq, 'last_error', reason, 'died_at', now)
  redis.call('ZADD', P .. 'dead', seq, seq)
  redis.call('HINCRBY', P .. 'count', 'p:' .. dest, -1)
  redis.call('HINCRBY', P .. 'count', 'd:' .. dest, 1)
end
return next_or_drop(dest, key, lease)
"""

_TAKE = _LIB + """
local dest, now, lease, owner, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local heads = {}
if limit > 0 then
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', rkey(dest), '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZADD', rkey(dest), lease, key)
    redis.call('HSET', okey(dest), key, owner)
    local h = next_or_drop(dest, key, lease)
    if h then heads[#heads + 1] = h end
  end
end
local nxt = redis.call('ZRANGEBYSCORE', rkey(dest), '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return {heads, nxt[2] or false}
"""

_RETRY = _LIB + """
local seq, dest, key, err, ready_at = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', P .. 'e:' .. seq) == 1 then
  redis.call('HINCRBY', P .. 'e:' .. seq, 'attempts', 1)
  redis.call('HSET', P .. 'e:' .. seq, 'last_error', err)
end
redis.call('ZADD', rkey(dest), 'XX', ready_at, key)
redis.call('HDEL', okey(dest), key)
return 1
"""

_RETRY_NOW = _LIB + """
local dest, now = ARGV[1], ARGV[2]
local n = 0
for _, key in ipairs(redis.call('ZRANGEBYSCORE', rkey(dest), '(' .. now, '+inf')) do
  if redis.call('HEXISTS', okey(dest), key) == 0 then
    redis.call('ZADD', rkey(dest), 'XX', now, key)
    n = n + 1
  end
end
return n
"""

_RELEASE = _LIB + """
local owner, now = ARGV[1], tonumber(ARGV[2])
local n = 0
for _, dest in ipairs(redis.call('SMEMBERS', P .. 'dests')) do
  local held = redis.call('HGETALL', okey(dest))
  for i = 1, #held, 2 do
    if owner == '' or held[i + 1] == owner then
      local score = redis.call('ZSCORE', rkey(dest), held[i])
      if score and tonumber(score) > now then redis.call('ZADD', rkey(dest), 'XX', now, held[i]) end
      redis.call('HDEL', okey(dest), held[i])
      n = n + 1
    end
  end
end
return n
"""

_REDELIVER = _LIB + """
local now = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local seq = ARGV[i]
  if redis.call('ZREM', P .. 'dead', seq) == 1 then
    local e = P .. 'e:' .. seq
    local dest = redis.call('HGET', e, 'destination')
    local key = redis.call('HGET', e, 'key')
    redis.call('HSET', e, 'attempts', 0, 'enqueued_at', now)
    redis.call('HDEL', e, 'died_at')
    redis.call('ZADD', qkey(dest, key), seq, seq)
    -- a queue waiting out a backoff becomes due now; a held one stays with its holder
    if redis.call('HEXISTS', okey(dest), key) == 0 then
      redis.call('ZADD', rkey(dest), 'LT', now, key)
    else
      redis.call('ZADD', rkey(dest), 'NX', now, key)
    end
    redis.call('SADD', P .. 'dests', dest)
    redis.call('HINCRBY', P .. 'count', 'p:' .. dest, 1)
    redis.call('HINCRBY', P .. 'count', 'd:' .. dest, -1)
    n = n + 1
  end
end
return n
"""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _record(seq: Any, fields: list) -> OutboxRecord:
    """A record from the values of FIELDS (m, body, enqueued_at, attempts, last_error, died_at)."""
    m, body, enqueued_at, attempts, last_error, died = fields
    meta = json.loads(m)
    return OutboxRecord(
        meta["d"], meta["k"], meta["i"], meta["n"], meta["s"], bytes(body), meta["c"],
        seq=int(seq), enqueued_at=float(enqueued_at), attempts=int(attempts),
        last_error=_s(last_error or b""), died_at=float(died) if died is not None else None)


_FIELDS = ("m", "body", "enqueued_at", "attempts", "last_error", "died_at")


def _f(x: float) -> str:
    return repr(float(x))


class RedisOutbox:
    shared = True  # several server processes may deliver from it

    def __init__(self, host: str, port: int, *, db: int = 0, username: str | None = None,
                 password: str | None = None, ssl: bool = False, prefix: str = PREFIX) -> None:
        opts: dict[str, Any] = {"host": host, "port": port, "db": db, "username": username,
                                "password": password, "ssl": ssl}
        # the synchronous append blocks the event loop: never for long
        self.sync = redis.Redis(**opts, socket_timeout=5.0, socket_connect_timeout=5.0)
        self.client = aioredis.Redis(**opts)
        self.prefix = prefix
        self._append = self.sync.register_script(_APPEND)
        self._claim = self.client.register_script(_CLAIM)
        self._take = self.client.register_script(_TAKE)
        self._advance = self.client.register_script(_ADVANCE)
        self._dead = self.client.register_script(_DEAD)
        self._retry = self.client.register_script(_RETRY)
        self._release = self.client.register_script(_RELEASE)
        self._retry_now = self.client.register_script(_RETRY_NOW)
        self._redeliver = self.client.register_script(_REDELIVER)

    def _h(self, text: str) -> str:
        import hashlib

        return hashlib.sha1(text.encode()).hexdigest()

    def _rkey(self, dest: str) -> str:
        return f"{self.prefix}ready:{self._h(dest)}"

    def _qkey(self, dest: str, key: str) -> str:
        return f"{self.prefix}q:{self._h(dest + chr(10) + key)}"

    # -- writing -------------------------------------------------------------------------------

    def append(self, entries: Sequence[OutboxEntry], now: float, *,
               claim: Sequence[bool] = (), owner: str = "",
               lease_until: float = 0.0) -> list[Appended]:
        args: list[Any] = [_f(now), owner, _f(lease_until)]
        for i, e in enumerate(entries):
            meta = json.dumps({"d": e.destination, "k": e.key, "i": e.event_id, "n": e.event_name,
                               "s": e.signing_key, "c": e.created_at}, separators=(",", ":"))
            args += [e.destination, e.key, meta, e.body, "1" if i < len(claim) and claim[i] else "0"]
        return [Appended(True, int(x)) if x > 0 else Appended(x < 0)
                for x in self._append(keys=[self.prefix], args=args)]

    # -- sending -------------------------------------------------------------------------------

    async def destinations(self) -> list[str]:
        return sorted(_s(d) for d in await self.client.smembers(self.prefix + "dests"))

    async def ready_keys(self, destination: str, now: float, limit: int) -> list[str]:
        keys = await self.client.zrangebyscore(self._rkey(destination), "-inf", _f(now),
                                               start=0, num=limit)
        return [_s(k) for k in keys]

    async def next_ready_at(self, destination: str) -> float | None:
        first = await self.client.zrange(self._rkey(destination), 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    @staticmethod
    def _head(reply: Any) -> OutboxRecord | None:
        if not reply:
            return None
        return _record(reply[0], reply[1])

    async def take(self, destination: str, now: float, lease_until: float, owner: str,
                   limit: int) -> tuple[list[OutboxRecord], float | None]:
        heads, next_at = await self._take(
            keys=[self.prefix], args=[destination, _f(now), _f(lease_until), owner, limit])
        return [_record(h[0], h[1]) for h in heads], float(next_at) if next_at else None

    async def claim(self, destination: str, key: str, now: float, lease_until: float,
                    owner: str) -> OutboxRecord | None:
        return self._head(await self._claim(
            keys=[self.prefix], args=[destination, key, _f(now), _f(lease_until), owner]))

    async def advance(self, record: OutboxRecord, lease_until: float) -> OutboxRecord | None:
        return self._head(await self._advance(
            keys=[self.prefix], args=[record.seq, record.destination, record.key, _f(lease_until)]))

    async def dead_letter(self, record: OutboxRecord, reason: str, now: float,
                          lease_until: float) -> OutboxRecord | None:
        return self._head(await self._dead(
            keys=[self.prefix],
            args=[record.seq, record.destination, record.key, reason, _f(now), _f(lease_until)]))

    async def retry_later(self, record: OutboxRecord, error: str, ready_at: float) -> None:
        await self._retry(keys=[self.prefix],
                          args=[record.seq, record.destination, record.key, error, _f(ready_at)])

    async def retry_now(self, destination: str, now: float) -> int:
        return int(await self._retry_now(keys=[self.prefix], args=[destination, _f(now)]))

    async def release(self, owner: str | None, now: float) -> int:
        return int(await self._release(keys=[self.prefix], args=[owner or "", _f(now)]))

    # -- inspecting ----------------------------------------------------------------------------

    async def _records(self, seqs: list[Any]) -> list[OutboxRecord]:
        if not seqs:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for seq in seqs:
                pipe.hmget(f"{self.prefix}e:{_s(seq)}", _FIELDS)
            rows = await pipe.execute()
        return [_record(_s(seq), row) for seq, row in zip(seqs, rows) if row[0] is not None]

    async def pending(self, limit: int, destination: str | None = None) -> list[OutboxRecord]:
        out: list[OutboxRecord] = []
        dests = [destination] if destination else await self.destinations()
        for dest in dests:
            keys = sorted(_s(k) for k in await self.client.zrange(self._rkey(dest), 0, -1))
            for key in keys:
                if len(out) >= limit:
                    return out
                seqs = await self.client.zrange(self._qkey(dest, key), 0, limit - len(out) - 1)
                out += await self._records(list(seqs))
        return out[:limit]

    async def dead(self, limit: int, destination: str | None = None) -> list[OutboxRecord]:
        out: list[OutboxRecord] = []
        start = 0
        page = max(limit, 100)
        while len(out) < limit:
            seqs = await self.client.zrange(self.prefix + "dead", start, start + page - 1)
            if not seqs:
                break
            start += page
            out += [r for r in await self._records(list(seqs))
                    if destination is None or r.destination == destination]
        return out[:limit]

    async def counts(self) -> OutboxCounts:
        counts = OutboxCounts()
        for k, v in (await self.client.hgetall(self.prefix + "count")).items():
            kind, _, dest = _s(k).partition(":")
            if int(v) > 0:
                (counts.pending if kind == "p" else counts.dead)[dest] = int(v)
        return counts

    async def redeliver(self, now: float, seqs: Iterable[int] | None = None) -> int:
        if seqs is None:
            wanted = [int(s) for s in await self.client.zrange(self.prefix + "dead", 0, -1)]
        else:
            wanted = list(seqs)
        moved = 0
        for i in range(0, len(wanted), 500):
            moved += int(await self._redeliver(keys=[self.prefix],
                                               args=[_f(now), *wanted[i:i + 500]]))
        return moved

    async def close(self) -> None:
        await self.client.aclose()
        self.sync.close()
