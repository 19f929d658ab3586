"""Ingress records: the IngressInfo, its IngressState and the stream-key index, on any KV backend.

LiveKit's Redis layout (livekit pkg/service/redisstore.go): the info in hash `ingress` by id,
`{ingress}_stream_key` mapping stream keys to ids, and the state beside the info so a session's
state updates never rewrite (or race with) an UpdateIngress of the info. A state is refused when
a newer session already wrote one (an older `started_at`): LiveKit's "trying to ovewrite an
ingress with an older version".
"""

from __future__ import annotations

from livekit.protocol.ingress import IngressInfo, IngressState

from .base import KV

NS_INGRESS = "ingress"
NS_STREAM_KEY = "{ingress}_stream_key"
NS_STATE = "{ingress}_state"


class OutOfDate(Exception):
    """A state from an older session than the one stored."""


class IngressStore:
    def __init__(self, kv: KV) -> None:
        self.kv = kv

    async def store(self, info: IngressInfo) -> None:
        """Write the info (without its state) and its stream key; the state when it has one."""
        record = IngressInfo()
        record.CopyFrom(info)
        record.ClearField("state")
        items = [(NS_INGRESS, info.ingress_id, record.SerializeToString())]
        if info.stream_key:
            items.append((NS_STREAM_KEY, info.stream_key, info.ingress_id.encode()))
        if info.HasField("state"):
            items.append((NS_STATE, info.ingress_id, info.state.SerializeToString()))
        await self.kv.put_many(items)

    async def store_state(self, ingress_id: str, state: IngressState) -> None:
        """Raises OutOfDate when a newer session's state is stored already."""
        raw = await self.kv.get(NS_STATE, ingress_id)
        if raw is not None:
            old = IngressState.FromString(raw)
            if state.started_at and old.started_at > state.started_at:
                raise OutOfDate(ingress_id)
        await self.kv.put(NS_STATE, ingress_id, state.SerializeToString())

    async def load(self, ingress_id: str) -> IngressInfo | None:
        raw = await self.kv.get(NS_INGRESS, ingress_id)
        if raw is None:
            return None
        info = IngressInfo.FromString(raw)
        state = await self.kv.get(NS_STATE, ingress_id)
        info.state.CopyFrom(IngressState.FromString(state) if state is not None else IngressState())
        return info

    async def load_by_stream_key(self, stream_key: str) -> IngressInfo | None:
        ingress_id = await self.kv.get(NS_STREAM_KEY, stream_key)
        return None if ingress_id is None else await self.load(ingress_id.decode())

    async def list(self, room_name: str = "") -> list[IngressInfo]:
        states = dict(await self.kv.items(NS_STATE))
        out = []
        for ingress_id, raw in await self.kv.items(NS_INGRESS):
            info = IngressInfo.FromString(raw)
            if room_name and info.room_name != room_name:
                continue
            state = states.get(ingress_id)
            info.state.CopyFrom(IngressState.FromString(state) if state is not None else IngressState())
            out.append(info)
        return out

    async def delete(self, info: IngressInfo) -> None:
        await self.kv.delete(NS_INGRESS, info.ingress_id)
        await self.kv.delete(NS_STATE, info.ingress_id)
        if info.stream_key:
            await self.kv.delete(NS_STREAM_KEY, info.stream_key)
