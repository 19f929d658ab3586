"""RoomManager: the rooms this server hosts, their creation, persistence and closing.

CreateRoom is get-or-create (an existing room comes back unchanged); a new room gets an `RM_`
sid, LiveKit's defaults for its timeouts and codecs, is stored, and `room_started` fires at once
(livekit pkg/service/roomallocator.go, roommanager.go). A ticker closes idle rooms every second.
Rooms are kept in the store, so a restart brings them back with their sids and creation times.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Iterable

from google.protobuf.json_format import ParseDict
from livekit.protocol.models import (
    Codec,
    DataPacket,
    DisconnectReason,
    ParticipantInfo,
    ParticipantPermission,
    TrackInfo,
    UserPacket,
)
from livekit.protocol.models import Room as RoomInfo
from livekit.protocol.room import (
    CreateRoomRequest,
    PerformRpcRequest,
    RoomConfiguration,
    SendDataRequest,
)
from livekit.protocol.rtc import MuteTrackRequest, SignalResponse

from .. import ids
from ..config import RoomSettings
from ..events import Event, EventBus, EventName
from ..logs import get_logger
from ..store import Store
from .errors import ParticipantNotFound, RoomFull, RoomNotFound
from .participant import Participant
from .room import Room

log = get_logger("lkserver.rooms")


class UnknownRoomPreset(ValueError):
    pass


class RoomManager:
    def __init__(self, settings: RoomSettings, store: Store, events: EventBus,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.clock = clock
        self.rooms: dict[str, Room] = {}
        self._create_lock = asyncio.Lock()
        self._ticker: asyncio.Task | None = None
        # called with the Room whenever its record changes (signalling sends room_update)
        self._room_update_listeners: list[Callable[[Room], None]] = []
        # called when a participant's info changes (signalling broadcasts ParticipantUpdate)
        self._participant_listeners: list[Callable[[Room, Participant], None]] = []
        # a participant left the room (signalling tells the others)
        self._gone_listeners: list[Callable[[Room, ParticipantInfo], None]] = []
        # server-driven subscription changes (UpdateSubscriptions), applied by the SFU
        self._subscription_listeners: list[Callable[[Room, Participant, list[str], bool], None]] = []
        self._codecs: tuple[list, list[Codec]] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bring back the stored rooms, then start closing idle ones."""
        now = self.clock()
        for stored in await self.store.list_rooms():
            info, internal, last_left = stored.info, stored.internal, stored.departed_at
            if info.num_participants > 0:
                # its participants were connected to the previous process: they left at restart
                last_left = now
                info.num_participants = 0
                info.num_publishers = 0
            self.rooms[info.name] = Room(info, internal, last_left)
        if self.rooms:
            log.info("rooms_restored", count=len(self.rooms))
        self._ticker = asyncio.create_task(self._close_idle_rooms_forever())

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
            self._ticker = None

    async def _close_idle_rooms_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.close_idle_rooms()
            except Exception:
                log.exception("close_idle_rooms_failed")

    async def close_idle_rooms(self) -> None:
        now = self.clock()
        for room in [r for r in self.rooms.values() if r.should_close(now)]:
            log.info("room_closing", room=room.name, sid=room.sid, reason="timeout")
            await self._close_room(room, DisconnectReason.ROOM_CLOSED)

    # -- rooms -------------------------------------------------------------------------------

    def get_room(self, name: str) -> Room | None:
        return self.rooms.get(name)

    def require_room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            raise RoomNotFound(name)
        return room

    async def create_room(self, req: CreateRoomRequest) -> tuple[RoomInfo, bool]:
        """Get or create a room; returns (room, created)."""
        async with self._create_lock:
            existing = self.rooms.get(req.name)
            if existing is not None:
                return existing.to_proto(), False
            req = self._apply_preset(req)
            now = self.clock()
            s = self.settings
            info = RoomInfo(
                sid=ids.new_id(ids.ROOM),
                name=req.name,
                creation_time=int(now),
                creation_time_ms=int(now * 1000),
                turn_password=ids.random_secret(),
                empty_timeout=req.empty_timeout if req.empty_timeout > 0 else s.empty_timeout,
                departure_timeout=req.departure_timeout if req.departure_timeout > 0 else s.departure_timeout,
                max_participants=req.max_participants if req.max_participants > 0 else s.max_participants,
                metadata=req.metadata,
                enabled_codecs=self._enabled_codecs(),
            )
            internal = RoomConfiguration(
                egress=req.egress if req.HasField("egress") else None,
                agents=req.agents,
                min_playout_delay=req.min_playout_delay,
                max_playout_delay=req.max_playout_delay,
                sync_streams=req.sync_streams,
            )
            await self.store.store_room(info, internal)
            room = Room(info, internal)
            self.rooms[req.name] = room
        log.info("room_started", room=info.name, sid=info.sid)
        self.events.publish(Event(EventName.ROOM_STARTED, room=room.to_proto()))
        return room.to_proto(), True

    def _enabled_codecs(self) -> list[Codec]:
        """room.enabled_codecs as Codec messages, built once (a Room copies them in)."""
        source = self.settings.enabled_codecs
        if self._codecs is None or self._codecs[0] is not source:
            self._codecs = (source, [_codec(c) for c in source])
        return self._codecs[1]

    def _apply_preset(self, req: CreateRoomRequest) -> CreateRoomRequest:
        """Fill the request's zero fields from `room.room_configurations[room_preset]`."""
        if not req.room_preset:
            return req
        preset = self.settings.room_configurations.get(req.room_preset)
        if preset is None:
            raise UnknownRoomPreset("unknown room configuration in create room request")
        conf = ParseDict(preset, RoomConfiguration(), ignore_unknown_fields=True)
        out = CreateRoomRequest()
        out.CopyFrom(req)
        for name in ("empty_timeout", "departure_timeout", "max_participants", "metadata",
                     "min_playout_delay", "max_playout_delay", "sync_streams"):
            if not getattr(out, name) and getattr(conf, name):
                setattr(out, name, getattr(conf, name))
        if not out.HasField("egress") and conf.HasField("egress"):
            out.egress.CopyFrom(conf.egress)
        if not out.agents and conf.agents:
            out.agents.extend(conf.agents)
        return out

    def live_rooms(self, names: Iterable[str] = ()) -> list[Room]:
        """The named rooms that exist (all rooms without names), as ListRooms selects them."""
        names = list(names)
        if names:
            return [self.rooms[n] for n in names if n in self.rooms]
        return list(self.rooms.values())

    def list_rooms(self, names: Iterable[str] = ()) -> list[RoomInfo]:
        return [r.to_proto() for r in self.live_rooms(names)]

    async def delete_room(self, name: str) -> None:
        room = self.require_room(name)
        log.info("room_deleting", room=name, sid=room.sid)
        await self._close_room(room, DisconnectReason.ROOM_DELETED)

    async def update_room_metadata(self, name: str, metadata: str) -> RoomInfo:
        room = self.require_room(name)
        room.info.metadata = metadata
        await self._persist_room_state(room)
        for listener in self._room_update_listeners:
            listener(room)
        return room.to_proto()

    async def set_active_recording(self, name: str, active: bool) -> None:
        """Room.active_recording (an egress of the room is recording); clients get a RoomUpdate."""
        room = self.get_room(name)
        if room is None or room.closed or room.info.active_recording == active:
            return
        room.info.active_recording = active
        await self._persist_room_state(room)
        for listener in self._room_update_listeners:
            listener(room)

    async def _close_room(self, room: Room, reason: "DisconnectReason.ValueType") -> None:
        if room.closed:
            return
        room.closed = True
        for p in list(room.participants.values()):
            if p.connection is not None:
                p.connection.close(reason)
            await self._participant_gone(room, p, reason)
        self.rooms.pop(room.name, None)
        await self.store.delete_room(room.name)
        final = room.to_proto()
        log.info("room_finished", room=room.name, sid=room.sid)
        self.events.publish(Event(EventName.ROOM_FINISHED, room=final))

    # -- participants ------------------------------------------------------------------------

    def on_room_update(self, fn: Callable[[Room], None]) -> None:
        self._room_update_listeners.append(fn)

    def get_participant(self, room_name: str, identity: str) -> Participant | None:
        room = self.rooms.get(room_name)
        return room.participants.get(identity) if room else None

    def require_participant(self, room_name: str, identity: str) -> tuple[Room, Participant]:
        room = self.require_room(room_name)
        p = room.participants.get(identity)
        if p is None:
            raise ParticipantNotFound(identity)
        return room, p

    def list_participants(self, room_name: str) -> list[ParticipantInfo]:
        room = self.rooms.get(room_name)
        return [p.info for p in room.participants.values()] if room else []

    async def remove_participant(self, room_name: str, identity: str,
                           reason: "DisconnectReason.ValueType" = DisconnectReason.PARTICIPANT_REMOVED) -> None:
        room, p = self.require_participant(room_name, identity)
        if p.connection is not None:
            p.connection.close(reason)
        await self._participant_gone(room, p, reason)

    async def join(self, create: CreateRoomRequest, participant: Participant, *,
                   may_create: bool) -> tuple[Room, Participant | None]:
        """Admit a participant to a room (created on the way if allowed).

        Returns the room and the participant this one replaces (same identity), whose
        connection the caller closes with DUPLICATE_IDENTITY. Raises RoomNotFound when the room
        does not exist and may not be created, RoomFull at max_participants (LiveKit
        pkg/rtc/room.go Join; dependent participants do not count)."""
        room = self.rooms.get(create.name)
        if room is None or room.closed:
            if not may_create:
                raise RoomNotFound(create.name)
            await self.create_room(create)
            room = self.rooms[create.name]
        previous = room.participants.get(participant.identity)
        if room.info.max_participants and not participant.is_dependent and previous is None:
            if room.non_dependent_count() >= room.info.max_participants:
                raise RoomFull(create.name)
        if previous is not None:
            await self._participant_gone(room, previous, DisconnectReason.DUPLICATE_IDENTITY)
        room.participants[participant.identity] = participant
        await self._persist_room_state(room)
        log.info("participant_joining", room=room.name, identity=participant.identity, sid=participant.sid)
        return room, previous

    def participant_active(self, room: Room, p: Participant) -> None:
        """The participant's media transport connected: LiveKit's participant_joined moment."""
        if p.ever_active or room.participants.get(p.identity) is not p:
            return
        p.ever_active = True
        p.info.state = ParticipantInfo.State.ACTIVE
        self._participant_changed(room, p)
        log.info("participant_joined", room=room.name, identity=p.identity, sid=p.sid)
        self.events.publish(Event(EventName.PARTICIPANT_JOINED, room=room.to_proto(), participant=p.info))

    async def participant_left(self, room: Room, p: Participant,
                               reason: "DisconnectReason.ValueType") -> None:
        """The participant's connection ended (it left, was removed, or timed out)."""
        await self._participant_gone(room, p, reason)

    def track_published(self, room: Room, p: Participant, track: TrackInfo) -> None:
        if room.participants.get(p.identity) is not p:
            return
        p.info.tracks.append(track)
        p.info.is_publisher = True
        self._participant_changed(room, p)
        log.info("track_published", room=room.name, identity=p.identity, track=track.sid)
        self.events.publish(Event(EventName.TRACK_PUBLISHED, room=self._webhook_room(room),
                                  participant=_minimal_participant(p), track=track))

    def track_unpublished(self, room: Room, p: Participant, track_sid: str) -> TrackInfo | None:
        for i, t in enumerate(p.info.tracks):
            if t.sid == track_sid:
                track = TrackInfo()
                track.CopyFrom(t)
                del p.info.tracks[i]
                self._participant_changed(room, p)
                log.info("track_unpublished", room=room.name, identity=p.identity, track=track_sid)
                self.events.publish(Event(EventName.TRACK_UNPUBLISHED, room=self._webhook_room(room),
                                          participant=_minimal_participant(p), track=track))
                return track
        return None

    def _webhook_room(self, room: Room) -> RoomInfo:
        """Track events carry a minimal room unless enable_full_room_in_webhooks is set."""
        if self.settings.enable_full_room_in_webhooks:
            return room.to_proto()
        return RoomInfo(sid=room.sid, name=room.name)

    async def set_track_muted(self, room_name: str, identity: str, track_sid: str,
                              muted: bool) -> TrackInfo | None:
        """Server-side mute of a published track; the publisher is told to mute it too.

        Unknown track sids return None (LiveKit answers `track: null`)."""
        room, p = self.require_participant(room_name, identity)
        if p.connection is not None:
            p.connection.send_signal(SignalResponse(mute=MuteTrackRequest(sid=track_sid, muted=muted)))
        for track in p.info.tracks:
            if track.sid == track_sid:
                if track.muted != muted:
                    track.muted = muted
                    self._participant_changed(room, p)
                out = TrackInfo()
                out.CopyFrom(track)
                return out
        return None

    async def update_participant(self, room_name: str, identity: str, *, name: str = "",
                                 metadata: str = "", attributes: dict[str, str] | None = None,
                                 permission: ParticipantPermission | None = None) -> ParticipantInfo:
        """UpdateParticipant's semantics: empty name/metadata leave them unchanged, an attribute
        set to "" is deleted, a permission replaces the whole permission set."""
        room, p = self.require_participant(room_name, identity)
        if name:
            p.info.name = name
        if metadata:
            p.info.metadata = metadata
        for k, v in (attributes or {}).items():
            if v == "":
                p.info.attributes.pop(k, None)
            else:
                p.info.attributes[k] = v
        if permission is not None:
            p.info.permission.CopyFrom(permission)
        self._participant_changed(room, p)
        return p.info

    async def update_subscriptions(self, room_name: str, identity: str, track_sids: list[str],
                                   subscribe: bool) -> None:
        room, p = self.require_participant(room_name, identity)
        for listener in self._subscription_listeners:
            listener(room, p, track_sids, subscribe)

    async def send_data(self, req: SendDataRequest) -> None:
        """Deliver an API data packet to every participant, or to the listed sids/identities."""
        room = self.require_room(req.room)
        packet = DataPacket(
            kind=req.kind,
            destination_identities=req.destination_identities,
            user=UserPacket(
                payload=req.data, destination_sids=req.destination_sids,
                destination_identities=req.destination_identities,
                topic=req.topic if req.HasField("topic") else None, nonce=req.nonce,
            ),
        )
        sids, identities = set(req.destination_sids), set(req.destination_identities)
        for p in room.participants.values():
            if (sids or identities) and p.sid not in sids and p.identity not in identities:
                continue
            if p.connection is not None:
                p.connection.send_data(packet)

    async def perform_rpc(self, req: PerformRpcRequest) -> str:
        _, p = self.require_participant(req.room, req.destination_identity)
        if p.connection is None:
            raise ParticipantNotFound(req.destination_identity)
        return await p.connection.perform_rpc(req.method, req.payload, req.response_timeout_ms)

    async def move_participant(self, room_name: str, identity: str, destination: str) -> None:
        """Move a live participant, with its tracks, to another room (created if needed).

        The source room sees it leave (participant_left, reason MIGRATION); the destination sees
        it join (participant_joined). Its connection is told before and after, so it can take
        its media along (LiveKit Cloud's MoveParticipant; the open-source server lacks it)."""
        src, p = self.require_participant(room_name, identity)
        dest = self.rooms.get(destination)
        if dest is None or dest.closed:
            await self.create_room(CreateRoomRequest(name=destination))
            dest = self.rooms[destination]
        previous = dest.participants.get(identity)
        if dest.info.max_participants and not p.is_dependent and previous is None \
                and dest.non_dependent_count() >= dest.info.max_participants:
            raise RoomFull(destination)
        before, after = getattr(p.connection, "before_move", None), getattr(p.connection, "after_move", None)
        if before is not None:
            before()
        if previous is not None:
            if previous.connection is not None:
                previous.connection.close(DisconnectReason.DUPLICATE_IDENTITY)
            await self._participant_gone(dest, previous, DisconnectReason.DUPLICATE_IDENTITY)
        await self._participant_gone(src, p, DisconnectReason.MIGRATION)
        p.info.state = ParticipantInfo.State.ACTIVE if p.ever_active else p.info.state
        dest.participants[identity] = p
        await self._persist_room_state(dest)
        log.info("participant_moved", identity=identity, source=room_name, destination=destination)
        if p.ever_active:
            self.events.publish(Event(EventName.PARTICIPANT_JOINED, room=dest.to_proto(), participant=p.info))
        if after is not None:
            after(dest)

    def on_subscription_update(self, fn: Callable[[Room, Participant, list[str], bool], None]) -> None:
        self._subscription_listeners.append(fn)

    def on_participant_gone(self, fn: Callable[[Room, ParticipantInfo], None]) -> None:
        self._gone_listeners.append(fn)

    def on_participant_update(self, fn: Callable[[Room, Participant], None]) -> None:
        self._participant_listeners.append(fn)

    def _participant_changed(self, room: Room, p: Participant) -> None:
        p.info.version += 1
        for listener in self._participant_listeners:
            listener(room, p)

    async def _participant_gone(self, room: Room, p: Participant, reason: "DisconnectReason.ValueType") -> None:
        """Take a participant out of its room and announce it (left or connection aborted)."""
        if room.participants.get(p.identity) is not p:
            return
        del room.participants[p.identity]
        if not p.is_dependent:
            room.last_left_at = self.clock()
            if not room.closed:
                await self._persist_room_state(room)
        info = ParticipantInfo()
        info.CopyFrom(p.info)
        info.state = ParticipantInfo.State.DISCONNECTED
        info.disconnect_reason = reason
        for listener in self._gone_listeners:
            listener(room, info)
        name = EventName.PARTICIPANT_LEFT if p.ever_active else EventName.PARTICIPANT_CONNECTION_ABORTED
        self.events.publish(Event(name, room=room.to_proto(), participant=info))

    async def _persist_room_state(self, room: Room) -> None:
        """Keep the counters and the departure time, so a restart resumes the close rule."""
        await self.store.store_room(room.to_proto(), departed_at=room.last_left_at)


def _minimal_participant(p: Participant) -> ParticipantInfo:
    return ParticipantInfo(sid=p.sid, identity=p.identity)


def _codec(c: object) -> Codec:
    if isinstance(c, str):
        return Codec(mime=c)
    if isinstance(c, dict):
        return Codec(mime=str(c.get("mime", "")), fmtp_line=str(c.get("fmtp_line", "")))
    raise ValueError(f"room.enabled_codecs: unexpected entry {c!r}")
