"""RoomService: authorize, validate, call the room domain, map its errors.

Each handler follows LiveKit's order of checks (livekit pkg/service/roomservice.go; reference
server-api.md §2.6, §3): limits that LiveKit checks before auth come first, then the grant, then
the store. Operations LiveKit routes to the participant's node over psrpc answer `unavailable`
"no response from servers" when nobody hosts that participant, as a single LiveKit node does.
"""

from __future__ import annotations

from typing import Mapping

from livekit.protocol import models
from livekit.protocol import room as proto

from ..config import LimitSettings, RoomSettings
from ..rooms import ParticipantNotFound, RoomFull, RoomManager, RoomNotFound, RpcError, UnknownRoomPreset
from ..twirp.errors import (
    INTERNAL,
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    UNIMPLEMENTED,
    TwirpError,
    no_response,
    participant_not_found,
    room_not_found,
)
from .context import RequestContext


# data-channel RPC error codes -> Twirp codes (livekit protocol utils/data_channel_rpc.go)
RPC_ERROR_CODES = {
    1500: INTERNAL, 1501: "canceled", 1502: "canceled", 1503: "unavailable", 1504: "malformed",
    1505: INTERNAL, 1400: INVALID_ARGUMENT, 1401: "not_found", 1402: INVALID_ARGUMENT,
}


def _size(s: str) -> int:
    return len(s.encode("utf-8"))


class Limits:
    """LiveKit's LimitConfig checks, with the errors it answers."""

    def __init__(self, conf: LimitSettings) -> None:
        self.conf = conf

    def room_name(self, name: str) -> None:
        m = self.conf.max_room_name_length
        if m and _size(name) > m:
            raise TwirpError.psrpc(INVALID_ARGUMENT, f"room name length exceeds limits: max length {m}")

    def metadata(self, metadata: str) -> None:
        m = self.conf.max_metadata_size
        if m and _size(metadata) > m:
            raise TwirpError.invalid_argument("metadata size exceeds limits", str(m))

    def attributes(self, attributes: Mapping[str, str]) -> None:
        m = self.conf.max_attributes_size
        if m and sum(_size(k) + _size(v) for k, v in attributes.items()) > m:
            raise TwirpError.invalid_argument("attribute size exceeds limits", str(m))

    def participant_name(self, name: str) -> None:
        m = self.conf.max_participant_name_length
        if m and _size(name) > m:
            raise TwirpError.invalid_argument("name length exceeds limits", str(m))


class RoomService:
    def __init__(self, rooms: RoomManager, limits: LimitSettings, room_settings: RoomSettings) -> None:
        self.rooms = rooms
        self.limits = Limits(limits)
        self.room_settings = room_settings
        # set by the egress capability; CreateRoom's `egress` needs it
        self.egress_launcher: object | None = None

    async def create_room(self, ctx: RequestContext, req: proto.CreateRoomRequest) -> models.Room:
        ctx.require_create()
        if req.HasField("egress") and self.egress_launcher is None:
            raise TwirpError.psrpc(INTERNAL, "egress not connected")
        if not req.name:
            raise TwirpError.psrpc(INVALID_ARGUMENT, "no room name")
        self.limits.room_name(req.name)
        self.limits.metadata(req.metadata)
        for agent in req.agents:
            self.limits.metadata(agent.metadata)
            self.limits.attributes(agent.attributes)
        try:
            room, created = await self.rooms.create_room(req)
        except UnknownRoomPreset as e:
            raise TwirpError(INVALID_ARGUMENT, str(e)) from None
        if created and req.HasField("egress") and req.egress.HasField("room"):
            # auto egress: the room composite starts with the room; its failure fails CreateRoom
            from ..egress.errors import EgressError

            try:
                await self.egress_launcher.start_room_egress(room.name, req.egress.room)  # type: ignore[union-attr]
            except EgressError as e:
                raise TwirpError.psrpc(e.code, e.msg) from None
        return room

    async def list_rooms(self, ctx: RequestContext, req: proto.ListRoomsRequest) -> proto.ListRoomsResponse:
        ctx.require_list()
        resp = proto.ListRoomsResponse()
        for room in self.rooms.live_rooms(req.names):
            room.to_proto(resp.rooms.add())
        return resp

    async def delete_room(self, ctx: RequestContext, req: proto.DeleteRoomRequest) -> proto.DeleteRoomResponse:
        ctx.require_create()
        try:
            await self.rooms.delete_room(req.room)
        except RoomNotFound:
            raise room_not_found() from None
        return proto.DeleteRoomResponse()

    async def list_participants(self, ctx: RequestContext,
                                req: proto.ListParticipantsRequest) -> proto.ListParticipantsResponse:
        ctx.require_admin(req.room)
        return proto.ListParticipantsResponse(participants=self.rooms.list_participants(req.room))

    async def get_participant(self, ctx: RequestContext,
                              req: proto.RoomParticipantIdentity) -> models.ParticipantInfo:
        ctx.require_admin(req.room)
        p = self.rooms.get_participant(req.room, req.identity)
        if p is None:
            raise participant_not_found()
        return p.info

    async def remove_participant(self, ctx: RequestContext,
                                 req: proto.RoomParticipantIdentity) -> proto.RemoveParticipantResponse:
        ctx.require_admin(req.room)
        try:
            await self.rooms.remove_participant(req.room, req.identity)
        except (RoomNotFound, ParticipantNotFound):
            raise participant_not_found() from None
        return proto.RemoveParticipantResponse()

    async def mute_published_track(self, ctx: RequestContext,
                                   req: proto.MuteRoomTrackRequest) -> proto.MuteRoomTrackResponse:
        ctx.require_admin(req.room)
        self._hosted_participant(req.room, req.identity)
        if not req.muted and not self.room_settings.enable_remote_unmute:
            raise TwirpError.psrpc("failed_precondition", "remote unmute not enabled")
        track = await self.rooms.set_track_muted(req.room, req.identity, req.track_sid, req.muted)
        return proto.MuteRoomTrackResponse(track=track)

    async def update_participant(self, ctx: RequestContext,
                                 req: proto.UpdateParticipantRequest) -> models.ParticipantInfo:
        self.limits.participant_name(req.name)
        self.limits.metadata(req.metadata)
        self.limits.attributes(req.attributes)
        ctx.require_admin(req.room)
        if self.rooms.get_participant(req.room, req.identity) is None:
            raise participant_not_found()
        return await self.rooms.update_participant(
            req.room, req.identity, name=req.name, metadata=req.metadata,
            attributes=dict(req.attributes),
            permission=req.permission if req.HasField("permission") else None,
        )

    async def update_subscriptions(self, ctx: RequestContext,
                                   req: proto.UpdateSubscriptionsRequest) -> proto.UpdateSubscriptionsResponse:
        ctx.require_admin(req.room)
        self._hosted_participant(req.room, req.identity)
        sids = list(req.track_sids)
        for pt in req.participant_tracks:
            sids.extend(pt.track_sids)
        await self.rooms.update_subscriptions(req.room, req.identity, sids, req.subscribe)
        return proto.UpdateSubscriptionsResponse()

    async def send_data(self, ctx: RequestContext, req: proto.SendDataRequest) -> proto.SendDataResponse:
        ctx.require_admin(req.room)
        if len(req.nonce) not in (0, 16):
            raise TwirpError(INVALID_ARGUMENT,
                             f"nonce should be 16-bytes or not present, got: {len(req.nonce)} bytes")
        if self.rooms.get_room(req.room) is None:
            raise no_response()
        await self.rooms.send_data(req)
        return proto.SendDataResponse()

    async def update_room_metadata(self, ctx: RequestContext,
                                   req: proto.UpdateRoomMetadataRequest) -> models.Room:
        self.limits.metadata(req.metadata)
        ctx.require_admin(req.room)
        try:
            return await self.rooms.update_room_metadata(req.room, req.metadata)
        except RoomNotFound:
            raise room_not_found() from None

    async def forward_participant(self, ctx: RequestContext,
                                  req: proto.ForwardParticipantRequest) -> proto.ForwardParticipantResponse:
        self._check_destination(ctx, req.room, req.identity, req.destination_room)
        # LiveKit's open-source server does not implement it either (its node answers "not implemented")
        raise TwirpError(UNIMPLEMENTED, "ForwardParticipant is not supported: use MoveParticipant")

    async def move_participant(self, ctx: RequestContext,
                               req: proto.MoveParticipantRequest) -> proto.MoveParticipantResponse:
        self._check_destination(ctx, req.room, req.identity, req.destination_room)
        self.limits.room_name(req.destination_room)
        try:
            await self.rooms.move_participant(req.room, req.identity, req.destination_room)
        except (RoomNotFound, ParticipantNotFound):
            raise no_response() from None
        except RoomFull:
            raise TwirpError.psrpc(RESOURCE_EXHAUSTED, "room has exceeded its max participants") from None
        return proto.MoveParticipantResponse()

    async def perform_rpc(self, ctx: RequestContext, req: proto.PerformRpcRequest) -> proto.PerformRpcResponse:
        ctx.require_admin(req.room)
        if not req.destination_identity:
            raise TwirpError.psrpc(INVALID_ARGUMENT, "destination identity is required")
        self._hosted_participant(req.room, req.destination_identity)
        try:
            payload = await self.rooms.perform_rpc(req)
        except RpcError as e:
            code = RPC_ERROR_CODES.get(e.code, INTERNAL)
            raise TwirpError.psrpc(code, f"RpcError {e.code}: {e.message}") from None
        except ParticipantNotFound:
            raise no_response() from None
        return proto.PerformRpcResponse(payload=payload)

    # -- helpers -------------------------------------------------------------------------------

    def _hosted_participant(self, room: str, identity: str) -> None:
        """LiveKit reaches the participant over psrpc; nobody answers for an absent one."""
        if self.rooms.get_participant(room, identity) is None:
            raise no_response()

    def _check_destination(self, ctx: RequestContext, room: str, identity: str, destination: str) -> None:
        ctx.require_destination(room, destination)
        if room == destination:
            raise TwirpError.invalid_argument("destination room cannot be the same as source room", "")
        self._hosted_participant(room, identity)
