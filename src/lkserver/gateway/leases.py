"""Room-name leases: a tenant keeps a room name while join tokens it was given for it may still be
valid, even after the room itself closed.

A join token names a room, not an owner. Without leases, tenant A's room could close, tenant B
could create a room of the same name, and A's users, still holding A's unexpired tokens, would
walk into B's room (SaynaAI/sayna has this gap too). Each token the gateway issues extends its
tenant's lease on the name to the token's expiry; another tenant cannot create the name until
then. Leases live in the server's store, so a restart keeps them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

NS_LEASES = "gateway_name_leases"
PURGE_EVERY = 1000  # grants between sweeps of expired leases


class NameLeases:
    def __init__(self, kv: Any, clock: Callable[[], float] = time.time) -> None:
        self.kv = kv
        self.clock = clock
        self._grants = 0

    async def holder(self, name: str) -> str | None:
        """The tenant holding the name now, if any."""
        raw = await self.kv.get(NS_LEASES, name)
        if raw is None:
            return None
        lease = json.loads(raw)
        return lease["tenant"] if lease["until"] > self.clock() else None

    async def extend(self, name: str, tenant: str, until: float) -> None:
        raw = await self.kv.get(NS_LEASES, name)
        if raw is not None:
            lease = json.loads(raw)
            if lease["tenant"] == tenant and lease["until"] >= until:
                return
        await self.kv.put(NS_LEASES, name, json.dumps({"tenant": tenant, "until": until}).encode())
        self._grants += 1
        if self._grants % PURGE_EVERY == 0:
            await self.purge()

    async def purge(self) -> int:
        now = self.clock()
        expired = [k for k, v in await self.kv.items(NS_LEASES) if json.loads(v)["until"] <= now]
        for key in expired:
            await self.kv.delete(NS_LEASES, key)
        return len(expired)


__all__ = ["NameLeases"]
