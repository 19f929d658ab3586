"""AgentDispatchService: create, list and delete a room's agent dispatches.

LiveKit's order of checks (livekit pkg/service/agent_dispatch_service.go; reference
server-api.md §7): roomAdmin on the request's room, then metadata and attribute limits, then
the room (created when `room.auto_create` is on; otherwise a room nobody hosts answers
`unavailable` "no response from servers", as the psrpc call would).
"""

from __future__ import annotations

from livekit.protocol import agent_dispatch as proto
from livekit.protocol.room import CreateRoomRequest

from ..agents.dispatch import AgentDispatcher, DispatchNotFound
from ..config import LimitSettings, RoomSettings
from ..rooms import RoomManager
from ..twirp.errors import INVALID_ARGUMENT, NOT_FOUND, TwirpError, no_response
from .context import RequestContext
from .room import Limits


class AgentDispatchService:
    def __init__(self, rooms: RoomManager, dispatcher: AgentDispatcher, limits: LimitSettings,
                 room_settings: RoomSettings) -> None:
        self.rooms = rooms
        self.dispatcher = dispatcher
        self.limits = Limits(limits)
        self.room_settings = room_settings

    async def create_dispatch(self, ctx: RequestContext, req: proto.CreateAgentDispatchRequest) -> proto.AgentDispatch:
        ctx.require_admin(req.room)
        if req.deployment and any(c.isspace() for c in req.deployment):
            raise TwirpError.psrpc(INVALID_ARGUMENT, "invalid deployment")
        self.limits.metadata(req.metadata)
        self.limits.attributes(req.attributes)
        if not req.room:
            raise TwirpError.psrpc(INVALID_ARGUMENT, "no room name")
        if self.room_settings.auto_create:
            self.limits.room_name(req.room)
            await self.rooms.create_room(CreateRoomRequest(name=req.room))
        elif self.rooms.get_room(req.room) is None:
            raise no_response()
        return await self.dispatcher.create_dispatch(req)

    async def delete_dispatch(self, ctx: RequestContext, req: proto.DeleteAgentDispatchRequest) -> proto.AgentDispatch:
        ctx.require_admin(req.room)
        if self.rooms.get_room(req.room) is None:
            raise no_response()
        try:
            return await self.dispatcher.delete_dispatch(req.room, req.dispatch_id)
        except DispatchNotFound:
            raise TwirpError.psrpc(NOT_FOUND, "dispatch ID not found") from None

    async def list_dispatch(self, ctx: RequestContext, req: proto.ListAgentDispatchRequest) -> proto.ListAgentDispatchResponse:
        ctx.require_admin(req.room)
        if self.rooms.get_room(req.room) is None:
            raise no_response()
        return proto.ListAgentDispatchResponse(
            agent_dispatches=self.dispatcher.list_dispatches(req.room, req.dispatch_id))
