"""The distributed store: one Redis hash per namespace (LiveKit's layout: `rooms`, ...).

Values are the same binary protobuf records the SQLite backend keeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import redis.asyncio as aioredis

if TYPE_CHECKING:
    from .redis_outbox import RedisOutbox


class RedisKV:
    def __init__(self, address: str, *, username: str = "", password: str = "", db: int = 0,
                 use_tls: bool = False, **_: Any) -> None:
        host, _, port = address.rpartition(":") if ":" in address else (address, "", "6379")
        self.options: dict[str, Any] = {
            "host": host or "127.0.0.1", "port": int(port or 6379), "db": db,
            "username": username or None, "password": password or None, "ssl": use_tls,
        }
        self.client = aioredis.Redis(**self.options)

    async def put(self, ns: str, key: str, value: bytes) -> None:
        await self.client.hset(ns, key, value)

    async def put_many(self, items: Iterable[tuple[str, str, bytes]]) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            for ns, key, value in items:
                pipe.hset(ns, key, value)
            await pipe.execute()

    async def get(self, ns: str, key: str) -> bytes | None:
        return await self.client.hget(ns, key)

    async def delete(self, ns: str, key: str) -> bool:
        return bool(await self.client.hdel(ns, key))

    async def items(self, ns: str) -> list[tuple[str, bytes]]:
        data = await self.client.hgetall(ns)
        return sorted((k.decode(), v) for k, v in data.items())

    def outbox(self) -> RedisOutbox:
        """The webhook outbox on the same Redis (store/redis_outbox.py)."""
        from .redis_outbox import RedisOutbox

        return RedisOutbox(**self.options)

    async def close(self) -> None:
        await self.client.aclose()
