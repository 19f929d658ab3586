"""The webhook outbox: durable per-destination queues of encoded events, and their dead letters.

Every event bound for a webhook URL is one outbox record (destination URL, ordering key, the exact
body bytes, the API key that signs it), written before the event bus returns. A destination's
records are grouped into queues by key (LiveKit's `EventKey`: egress id, ingress id, room name,
...); one queue is delivered in `seq` order by whoever holds its lease, different queues in
parallel. Queues are found through a small index of queue heads (`ready_at`: when the queue may
next be taken — due now, after a retry backoff, or when a holder's lease runs out), so a sender
never reads more than the heads it can work on, however many records wait behind them.

Two backends with one interface: `SQLiteOutbox` (tables beside the kv table in the same file) and
`RedisOutbox` (store/redis_outbox.py). `append` is synchronous (the event bus calls subscribers
synchronously and the record must be stored before `publish` returns); everything else is async.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class OutboxEntry:
    """One event for one destination, as the webhook sender appends it."""

    destination: str  # the URL
    key: str  # ordering key within the destination (LiveKit's EventKey)
    event_id: str
    event_name: str
    signing_key: str  # the API key whose secret signs the request
    body: bytes  # the exact request body
    created_at: float  # the event's time


@dataclass
class OutboxRecord(OutboxEntry):
    seq: int = 0
    enqueued_at: float = 0.0  # start of the retry window (reset by a redelivery)
    attempts: int = 0
    last_error: str = ""
    died_at: float | None = None  # set on dead letters


@dataclass(frozen=True)
class Appended:
    new_queue: bool  # the entry started its queue (a sender should look at the destination)
    claimed_seq: int = 0  # > 0: the new queue is held by the caller; this is the entry's seq


@dataclass
class OutboxCounts:
    pending: dict[str, int] = field(default_factory=dict)  # destination -> records waiting
    dead: dict[str, int] = field(default_factory=dict)  # destination -> dead letters


class Outbox(Protocol):
    # True when several server processes may share it (leases then only run out; a starting
    # process never ends another's)
    shared: bool

    def append(self, entries: Sequence[OutboxEntry], now: float, *,
               claim: Sequence[bool] = (), owner: str = "",
               lease_until: float = 0.0) -> list[Appended]:
        """Store the entries durably before returning. An entry whose `claim` flag is set and
        whose queue is new gets that queue held by `owner` until `lease_until` (the caller
        delivers it at once, without asking the store again)."""
        ...

    async def destinations(self) -> list[str]:
        """Destinations with at least one queue."""
        ...

    async def ready_keys(self, destination: str, now: float, limit: int) -> list[str]:
        """Up to `limit` queues of the destination that may be taken now, longest-waiting first."""
        ...

    async def next_ready_at(self, destination: str) -> float | None:
        """When the destination's next queue may be taken (None: no queues)."""
        ...

    async def take(self, destination: str, now: float, lease_until: float, owner: str,
                   limit: int) -> tuple[list[OutboxRecord], float | None]:
        """`claim` up to `limit` ready queues at once (the sender's one call per wake-up): their
        heads, and when the destination's next queue may be taken (None: no queues)."""
        ...

    async def claim(self, destination: str, key: str, now: float, lease_until: float,
                    owner: str) -> OutboxRecord | None:
        """Take the queue until `lease_until` if it is ready; its head record, or None when it was
        not ready (someone holds it, or it waits for a retry) or is empty (then it is removed)."""
        ...

    async def advance(self, record: OutboxRecord, lease_until: float) -> OutboxRecord | None:
        """The record was delivered: remove it and return the queue's next record with the lease
        extended, or None when the queue is now empty (it is removed; the lease ends)."""
        ...

    async def dead_letter(self, record: OutboxRecord, reason: str, now: float,
                          lease_until: float) -> OutboxRecord | None:
        """Move the record to the dead letters; then as `advance`."""
        ...

    async def retry_later(self, record: OutboxRecord, error: str, ready_at: float) -> None:
        """The attempt failed: count it, note the error, release the queue until `ready_at`."""
        ...

    async def retry_now(self, destination: str, now: float) -> int:
        """Queues of the destination waiting out a backoff become ready now (it answers again)."""
        ...

    async def release(self, owner: str | None, now: float) -> int:
        """End the leases of `owner` (every lease when None): those queues are ready at `now`."""
        ...

    async def pending(self, limit: int, destination: str | None = None) -> list[OutboxRecord]:
        """Records waiting, in queue order (up to `limit`)."""
        ...

    async def dead(self, limit: int, destination: str | None = None) -> list[OutboxRecord]:
        ...

    async def counts(self) -> OutboxCounts:
        ...

    async def redeliver(self, now: float, seqs: Iterable[int] | None = None) -> int:
        """Move dead letters (all, or those seqs) back into their queues, at their original
        place, with a fresh retry window. Returns how many moved."""
        ...

    async def close(self) -> None:
        ...


SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    signing_key TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS webhook_outbox_queue ON webhook_outbox (destination, key, seq);
CREATE TABLE IF NOT EXISTS webhook_queues (
    destination TEXT NOT NULL,
    key TEXT NOT NULL,
    ready_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (destination, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhook_queues_ready ON webhook_queues (destination, ready_at);
CREATE TABLE IF NOT EXISTS webhook_dead (
    seq INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    signing_key TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    died_at REAL NOT NULL
);
"""

_COLUMNS = ("seq, destination, key, event_id, event_name, signing_key, body, created_at, "
            "enqueued_at, attempts, last_error")


def _record(row: tuple, died_at: float | None = None) -> OutboxRecord:
    (seq, destination, key, event_id, event_name, signing_key, body, created_at, enqueued_at,
     attempts, last_error) = row[:11]
    return OutboxRecord(destination, key, event_id, event_name, signing_key, bytes(body), created_at,
                        seq=seq, enqueued_at=enqueued_at, attempts=attempts, last_error=last_error,
                        died_at=row[11] if len(row) > 11 else died_at)


class SQLiteOutbox:
    """The outbox in the store's SQLite file, on the store's connection.

    Each method is one short transaction on indexed rows. Like the kv store it runs on the event
    loop thread (a statement costs microseconds); WAL with synchronous=NORMAL makes a committed
    append survive the process being killed (an OS crash or power loss may lose the last ones).
    """

    shared = False  # one server process owns the data directory

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.db.executescript(SQLITE_SCHEMA)

    # -- writing -------------------------------------------------------------------------------

    def append(self, entries: Sequence[OutboxEntry], now: float, *,
               claim: Sequence[bool] = (), owner: str = "",
               lease_until: float = 0.0) -> list[Appended]:
        out = []
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for i, e in enumerate(entries):
                cur = self.db.execute(
                    "INSERT INTO webhook_outbox (destination, key, event_id, event_name, signing_key,"
                    " body, created_at, enqueued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (e.destination, e.key, e.event_id, e.event_name, e.signing_key, e.body,
                     e.created_at, now))
                seq = cur.lastrowid or 0
                held = i < len(claim) and claim[i]
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO webhook_queues (destination, key, ready_at, owner)"
                    " VALUES (?, ?, ?, ?)",
                    (e.destination, e.key, lease_until if held else now, owner if held else ""))
                new = cur.rowcount == 1
                out.append(Appended(new, seq if new and held else 0))
        return out

    # -- sending -------------------------------------------------------------------------------

    async def destinations(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT destination FROM webhook_queues")]

    async def ready_keys(self, destination: str, now: float, limit: int) -> list[str]:
        rows = self.db.execute(
            "SELECT key FROM webhook_queues WHERE destination = ? AND ready_at <= ?"
            " ORDER BY ready_at LIMIT ?", (destination, now, limit))
        return [r[0] for r in rows]

    async def next_ready_at(self, destination: str) -> float | None:
        row = self.db.execute("SELECT MIN(ready_at) FROM webhook_queues WHERE destination = ?",
                              (destination,)).fetchone()
        return row[0] if row else None

    def _head(self, destination: str, key: str) -> OutboxRecord | None:
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM webhook_outbox WHERE destination = ? AND key = ?"
            " ORDER BY seq LIMIT 1", (destination, key)).fetchone()
        return _record(row) if row else None

    def _next_or_drop(self, destination: str, key: str, lease_until: float) -> OutboxRecord | None:
        head = self._head(destination, key)
        if head is None:
            self.db.execute("DELETE FROM webhook_queues WHERE destination = ? AND key = ?",
                            (destination, key))
        else:
            self.db.execute("UPDATE webhook_queues SET ready_at = ? WHERE destination = ? AND key = ?",
                            (lease_until, destination, key))
        return head

    async def take(self, destination: str, now: float, lease_until: float, owner: str,
                   limit: int) -> tuple[list[OutboxRecord], float | None]:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            heads = []
            if limit > 0:
                keys = [r[0] for r in self.db.execute(
                    "SELECT key FROM webhook_queues WHERE destination = ? AND ready_at <= ?"
                    " ORDER BY ready_at LIMIT ?", (destination, now, limit))]
                for key in keys:
                    self.db.execute("UPDATE webhook_queues SET ready_at = ?, owner = ?"
                                    " WHERE destination = ? AND key = ?",
                                    (lease_until, owner, destination, key))
                    head = self._next_or_drop(destination, key, lease_until)
                    if head is not None:
                        heads.append(head)
            row = self.db.execute("SELECT MIN(ready_at) FROM webhook_queues"
                                  " WHERE destination = ? AND ready_at > ?", (destination, now)).fetchone()
            return heads, row[0]

    async def claim(self, destination: str, key: str, now: float, lease_until: float,
                    owner: str) -> OutboxRecord | None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            cur = self.db.execute(
                "UPDATE webhook_queues SET ready_at = ?, owner = ?"
                " WHERE destination = ? AND key = ? AND ready_at <= ?",
                (lease_until, owner, destination, key, now))
            if cur.rowcount != 1:
                return None
            return self._next_or_drop(destination, key, lease_until)

    async def advance(self, record: OutboxRecord, lease_until: float) -> OutboxRecord | None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM webhook_outbox WHERE seq = ?", (record.seq,))
            return self._next_or_drop(record.destination, record.key, lease_until)

    async def dead_letter(self, record: OutboxRecord, reason: str, now: float,
                          lease_until: float) -> OutboxRecord | None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                f"INSERT OR REPLACE INTO webhook_dead ({_COLUMNS}, died_at)"
                " SELECT seq, destination, key, event_id, event_name, signing_key, body, created_at,"
                " enqueued_at, attempts + 1, ?, ? FROM webhook_outbox WHERE seq = ?",
                (reason, now, record.seq))
            self.db.execute("DELETE FROM webhook_outbox WHERE seq = ?", (record.seq,))
            return self._next_or_drop(record.destination, record.key, lease_until)

    async def retry_later(self, record: OutboxRecord, error: str, ready_at: float) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE webhook_outbox SET attempts = attempts + 1, last_error = ?"
                            " WHERE seq = ?", (error, record.seq))
            self.db.execute("UPDATE webhook_queues SET ready_at = ?, owner = ''"
                            " WHERE destination = ? AND key = ?",
                            (ready_at, record.destination, record.key))

    async def retry_now(self, destination: str, now: float) -> int:
        cur = self.db.execute("UPDATE webhook_queues SET ready_at = ?"
                              " WHERE destination = ? AND ready_at > ? AND owner = ''",
                              (now, destination, now))
        return cur.rowcount

    async def release(self, owner: str | None, now: float) -> int:
        if owner is None:
            cur = self.db.execute("UPDATE webhook_queues SET ready_at = MIN(ready_at, ?), owner = ''"
                                  " WHERE owner != ''", (now,))
        else:
            cur = self.db.execute("UPDATE webhook_queues SET ready_at = MIN(ready_at, ?), owner = ''"
                                  " WHERE owner = ?", (now, owner))
        return cur.rowcount

    # -- inspecting ----------------------------------------------------------------------------

    async def pending(self, limit: int, destination: str | None = None) -> list[OutboxRecord]:
        where, args = ("WHERE destination = ?", (destination,)) if destination else ("", ())
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM webhook_outbox {where}"
                               " ORDER BY destination, key, seq LIMIT ?", (*args, limit))
        return [_record(r) for r in rows]

    async def dead(self, limit: int, destination: str | None = None) -> list[OutboxRecord]:
        where, args = ("WHERE destination = ?", (destination,)) if destination else ("", ())
        rows = self.db.execute(f"SELECT {_COLUMNS}, died_at FROM webhook_dead {where}"
                               " ORDER BY seq LIMIT ?", (*args, limit))
        return [_record(r) for r in rows]

    async def counts(self) -> OutboxCounts:
        pending = dict(self.db.execute(
            "SELECT destination, COUNT(*) FROM webhook_outbox GROUP BY destination"))
        dead = dict(self.db.execute("SELECT destination, COUNT(*) FROM webhook_dead GROUP BY destination"))
        return OutboxCounts(pending, dead)

    async def redeliver(self, now: float, seqs: Iterable[int] | None = None) -> int:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if seqs is None:
                rows = self.db.execute("SELECT seq FROM webhook_dead").fetchall()
                wanted = [r[0] for r in rows]
            else:
                wanted = list(seqs)
            moved = 0
            for seq in wanted:
                row = self.db.execute(f"SELECT {_COLUMNS} FROM webhook_dead WHERE seq = ?",
                                      (seq,)).fetchone()
                if row is None:
                    continue
                rec = _record(row)
                # back at its original place in its queue (seq), with a fresh retry window
                self.db.execute(
                    f"INSERT INTO webhook_outbox ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                    (rec.seq, rec.destination, rec.key, rec.event_id, rec.event_name,
                     rec.signing_key, rec.body, rec.created_at, now, rec.last_error))
                self.db.execute("DELETE FROM webhook_dead WHERE seq = ?", (seq,))
                # a queue waiting out a backoff becomes due now; a held one stays with its holder
                self.db.execute(
                    "INSERT INTO webhook_queues (destination, key, ready_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (destination, key) DO UPDATE SET ready_at = MIN(ready_at, excluded.ready_at)"
                    " WHERE owner = ''", (rec.destination, rec.key, now))
                moved += 1
            return moved

    async def close(self) -> None:
        # the connection belongs to the kv store, which closes it
        pass
