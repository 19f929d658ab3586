"""Persistence: the store interface and its backends."""

from __future__ import annotations

import os

from .base import KV, Store, StoredRoom
from .outbox import Appended, Outbox, OutboxCounts, OutboxEntry, OutboxRecord
from .sqlite import SQLiteKV


def open_store(data_dir: str, redis_address: str = "", **redis_options: object) -> Store:
    """The store a server uses: Redis when an address is configured, else SQLite in data_dir."""
    if redis_address:
        from .redis import RedisKV

        return Store(RedisKV(redis_address, **redis_options))  # type: ignore[arg-type]
    return Store(SQLiteKV(os.path.join(data_dir, "lkserver.db")))


__all__ = ["KV", "Appended", "Outbox", "OutboxCounts", "OutboxEntry", "OutboxRecord", "SQLiteKV",
           "Store", "StoredRoom", "open_store"]
