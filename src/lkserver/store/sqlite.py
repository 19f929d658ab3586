"""The embedded store: one SQLite file in WAL mode under the data directory.

Every write is its own committed transaction (autocommit), so a record that a request reported
as stored survives the process being killed. Calls run on the event loop thread: each is a
single indexed statement of a few microseconds, cheaper than a hop to a worker thread.
"""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from .outbox import SQLiteOutbox

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
"""


class SQLiteKV:
    def __init__(self, path: str) -> None:
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)

    async def put(self, ns: str, key: str, value: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)", (ns, key, value))

    async def put_many(self, items: Iterable[tuple[str, str, bytes]]) -> None:
        with self.db:  # one transaction
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)", list(items))

    async def get(self, ns: str, key: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key)).fetchone()
        return row[0] if row else None

    async def delete(self, ns: str, key: str) -> bool:
        cur = self.db.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (ns, key))
        return cur.rowcount > 0

    async def items(self, ns: str) -> list[tuple[str, bytes]]:
        return list(self.db.execute("SELECT key, value FROM kv WHERE ns = ? ORDER BY key", (ns,)))

    def outbox(self) -> SQLiteOutbox:
        """The webhook outbox in the same file and connection (store/outbox.py)."""
        from .outbox import SQLiteOutbox

        return SQLiteOutbox(self.db)

    async def close(self) -> None:
        self.db.close()
