"""Egress: authorize (roomRecord), validate, hand the request to the egress manager.

LiveKit's Twirp handlers (livekit pkg/service/egress.go): every method needs the roomRecord
grant; a start request naming a room needs that room (`requested room does not exist`); the
egress service validates the request (egress pkg/config) and answers STARTING; List/Stop/
UpdateStream/UpdateLayout act on stored records (`egress does not exist`).
"""

from __future__ import annotations

from livekit.protocol import egress as proto

from ..egress import plan as plans
from ..egress.manager import EgressManager
from .context import RequestContext


class EgressService:
    def __init__(self, manager: EgressManager) -> None:
        self.manager = manager

    async def _start(self, ctx: RequestContext, kind: str, req: object) -> proto.EgressInfo:
        ctx.require_record()
        return await self.manager.start_egress(kind, req, webhooks=list(getattr(req, "webhooks", [])))

    async def start_egress(self, ctx: RequestContext, req: proto.StartEgressRequest) -> proto.EgressInfo:
        return await self._start(ctx, plans.EGRESS, req)

    async def start_room_composite_egress(self, ctx: RequestContext,
                                          req: proto.RoomCompositeEgressRequest) -> proto.EgressInfo:
        return await self._start(ctx, plans.ROOM_COMPOSITE, req)

    async def start_web_egress(self, ctx: RequestContext, req: proto.WebEgressRequest) -> proto.EgressInfo:
        return await self._start(ctx, plans.WEB, req)

    async def start_participant_egress(self, ctx: RequestContext,
                                       req: proto.ParticipantEgressRequest) -> proto.EgressInfo:
        return await self._start(ctx, plans.PARTICIPANT, req)

    async def start_track_composite_egress(self, ctx: RequestContext,
                                           req: proto.TrackCompositeEgressRequest) -> proto.EgressInfo:
        return await self._start(ctx, plans.TRACK_COMPOSITE, req)

    async def start_track_egress(self, ctx: RequestContext, req: proto.TrackEgressRequest) -> proto.EgressInfo:
        return await self._start(ctx, plans.TRACK, req)

    async def update_layout(self, ctx: RequestContext, req: proto.UpdateLayoutRequest) -> proto.EgressInfo:
        ctx.require_record()
        return await self.manager.update_layout(req.egress_id, req.layout)

    async def update_stream(self, ctx: RequestContext, req: proto.UpdateStreamRequest) -> proto.EgressInfo:
        ctx.require_record()
        return await self.manager.update_stream(req.egress_id, list(req.add_output_urls),
                                                list(req.remove_output_urls))

    async def list_egress(self, ctx: RequestContext, req: proto.ListEgressRequest) -> proto.ListEgressResponse:
        ctx.require_record()
        return proto.ListEgressResponse(items=self.manager.list(req.room_name, req.egress_id, req.active))

    async def stop_egress(self, ctx: RequestContext, req: proto.StopEgressRequest) -> proto.EgressInfo:
        ctx.require_record()
        return await self.manager.stop_egress(req.egress_id)
