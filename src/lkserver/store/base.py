"""The store interface: namespaced key -> bytes maps, and the typed room records on top.

Backends implement `KV` (sqlite: embedded default; redis: shared by several server processes).
Values are binary protobuf, as in LiveKit's Redis layout (reference server-api.md §8). `Store`
is the one typed layer every backend shares, so both behave alike by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, TypeVar

from google.protobuf.message import Message
from livekit.protocol.agent_dispatch import AgentDispatch
from livekit.protocol.models import Room
from livekit.protocol.room import RoomConfiguration

from .outbox import Outbox

NS_ROOMS = "rooms"
NS_ROOM_INTERNAL = "room_internal"
NS_ROOM_DEPARTED = "room_departed"
# SIP resources and agent dispatches: LiveKit's Redis hashes (reference server-api.md §8)
NS_SIP_INBOUND_TRUNK = "sip_inbound_trunk"
NS_SIP_OUTBOUND_TRUNK = "sip_outbound_trunk"
NS_SIP_DISPATCH_RULE = "sip_dispatch_rule"
NS_AGENT_DISPATCH = "agent_dispatch:"  # + room name

M = TypeVar("M", bound=Message)


class KV(Protocol):
    async def put(self, ns: str, key: str, value: bytes) -> None: ...
    async def put_many(self, items: Iterable[tuple[str, str, bytes]]) -> None: ...
    async def get(self, ns: str, key: str) -> bytes | None: ...
    async def delete(self, ns: str, key: str) -> bool: ...
    async def items(self, ns: str) -> list[tuple[str, bytes]]: ...
    async def close(self) -> None: ...


@dataclass
class StoredRoom:
    info: Room
    internal: RoomConfiguration
    # when the last non-dependent participant left (drives departure_timeout), if ever
    departed_at: float | None = None


class Store:
    """Typed access to what lkserver keeps: rooms now; egress, ingress, SIP, ... as they land."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv
        self._outbox: Outbox | None = None

    @property
    def outbox(self) -> Outbox:
        """The webhook outbox, in the same backend as everything else (created on first use)."""
        if self._outbox is None:
            self._outbox = self.kv.outbox()  # type: ignore[attr-defined]
        return self._outbox

    async def store_room(self, room: Room, internal: RoomConfiguration | None = None,
                         departed_at: float | None = None) -> None:
        items = [(NS_ROOMS, room.name, room.SerializeToString())]
        if internal is not None:
            items.append((NS_ROOM_INTERNAL, room.name, internal.SerializeToString()))
        if departed_at is not None:
            items.append((NS_ROOM_DEPARTED, room.name, repr(departed_at).encode()))
        await self.kv.put_many(items)

    async def load_room(self, name: str) -> StoredRoom | None:
        data = await self.kv.get(NS_ROOMS, name)
        if data is None:
            return None
        internal = RoomConfiguration()
        raw = await self.kv.get(NS_ROOM_INTERNAL, name)
        if raw:
            internal.ParseFromString(raw)
        departed = await self.kv.get(NS_ROOM_DEPARTED, name)
        return StoredRoom(Room.FromString(data), internal, float(departed) if departed else None)

    async def room_exists(self, name: str) -> bool:
        return await self.kv.get(NS_ROOMS, name) is not None

    async def list_rooms(self) -> list[StoredRoom]:
        internals = dict(await self.kv.items(NS_ROOM_INTERNAL))
        departed = dict(await self.kv.items(NS_ROOM_DEPARTED))
        out = []
        for name, data in await self.kv.items(NS_ROOMS):
            internal = RoomConfiguration()
            if name in internals:
                internal.ParseFromString(internals[name])
            d = departed.get(name)
            out.append(StoredRoom(Room.FromString(data), internal, float(d) if d else None))
        return out

    async def delete_room(self, name: str) -> None:
        for ns in (NS_ROOMS, NS_ROOM_INTERNAL, NS_ROOM_DEPARTED):
            await self.kv.delete(ns, name)

    # -- protobuf records by id (SIP trunks and rules, agent dispatches) -----------------------

    async def put_message(self, ns: str, key: str, msg: Message) -> None:
        await self.kv.put(ns, key, msg.SerializeToString())

    async def get_message(self, ns: str, key: str, cls: type[M]) -> M | None:
        data = await self.kv.get(ns, key)
        return None if data is None else cls.FromString(data)

    async def list_messages(self, ns: str, cls: type[M]) -> list[M]:
        """Every record of a namespace, sorted by key (LiveKit lists SIP resources by id)."""
        return [cls.FromString(v) for _, v in await self.kv.items(ns)]

    async def delete_message(self, ns: str, key: str) -> bool:
        return await self.kv.delete(ns, key)

    async def store_agent_dispatch(self, dispatch: AgentDispatch) -> None:
        await self.put_message(NS_AGENT_DISPATCH + dispatch.room, dispatch.id, dispatch)

    async def list_agent_dispatches(self, room: str) -> list[AgentDispatch]:
        return await self.list_messages(NS_AGENT_DISPATCH + room, AgentDispatch)

    async def delete_agent_dispatches(self, room: str) -> None:
        for key, _ in await self.kv.items(NS_AGENT_DISPATCH + room):
            await self.kv.delete(NS_AGENT_DISPATCH + room, key)

    async def close(self) -> None:
        if self._outbox is not None:
            await self._outbox.close()
        await self.kv.close()
