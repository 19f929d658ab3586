"""Egress: authorize (roomRecord), validate, hand the request to the egress manager.

LiveKit's Twirp handlers (livekit pkg/service/egress.go): every method needs the roomRecord
grant; a start request naming a room needs that room (`requested room does not exist`); the
egress service validates the request (egress pkg/config) and answers STARTING; List/Stop/
UpdateStream/UpdateLayout act on stored records (`egress does not exist`).
"""

from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable, TypeVar

from livekit.protocol import egress as proto

from ..egress import plan as plans
from ..egress.errors import EgressError
from ..egress.manager import EgressManager
from ..twirp.errors import TwirpError
from .context import RequestContext

T = TypeVar("T")


def twirp_error(e: EgressError) -> TwirpError:
    """LiveKit's server relays the egress service's psrpc errors: the message gains the prefix."""
    return TwirpError.psrpc(e.code, e.msg)


def egress_errors(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(fn)
    async def call(*args: Any) -> T:
        try:
            return await fn(*args)
        except EgressError as e:
            raise twirp_error(e) from None

    return call


class EgressService:
    def __init__(self, manager: EgressManager) -> None:
        self.manager = manager

    async def _start(self, ctx: RequestContext, kind: str, req: object) -> proto.EgressInfo:
        ctx.require_record()
        return await self.manager.start_egress(kind, req, webhooks=list(getattr(req, "webhooks", [])))

    @egress_errors
    async def start_egress(self, ctx: RequestContext, req: proto.StartEgressRequest) -> proto.EgressInfo:
        return await self._start(ctx, plans.EGRESS, req)

    @egress_errors
    async def start_room_composite_egress(self, ctx: RequestContext,
                                          req: proto.RoomCompositeEgressRequest) -> proto.EgressInfo:
        return await self._start(ctx, plans.ROOM_COMPOSITE, req)

    @egress_errors
    async def start_web_egress(self, ctx: RequestContext, req: proto.WebEgressRequest) -> proto.EgressInfo:
        return await self._start(ctx, plans.WEB, req)

    @egress_errors
    async def start_participant_egress(self, ctx: RequestContext,
                                       req: proto.ParticipantEgressRequest) -> proto.EgressInfo:
        return await self._start(ctx, plans.PARTICIPANT, req)

    @egress_errors
    async def start_track_composite_egress(self, ctx: RequestContext,
                                           req: proto.TrackCompositeEgressRequest) -> proto.EgressInfo:
        return await self._start(ctx, plans.TRACK_COMPOSITE, req)

    @egress_errors
    async def start_track_egress(self, ctx: RequestContext, req: proto.TrackEgressRequest) -> proto.EgressInfo:
        return await self._start(ctx, plans.TRACK, req)

    @egress_errors
    async def update_layout(self, ctx: RequestContext, req: proto.UpdateLayoutRequest) -> proto.EgressInfo:
        ctx.require_record()
        return await self.manager.update_layout(req.egress_id, req.layout)

    @egress_errors
    async def update_stream(self, ctx: RequestContext, req: proto.UpdateStreamRequest) -> proto.EgressInfo:
        ctx.require_record()
        return await self.manager.update_stream(req.egress_id, list(req.add_output_urls),
                                                list(req.remove_output_urls))

    @egress_errors
    async def list_egress(self, ctx: RequestContext, req: proto.ListEgressRequest) -> proto.ListEgressResponse:
        ctx.require_record()
        return proto.ListEgressResponse(items=self.manager.list(req.room_name, req.egress_id, req.active))

    @egress_errors
    async def stop_egress(self, ctx: RequestContext, req: proto.StopEgressRequest) -> proto.EgressInfo:
        ctx.require_record()
        return await self.manager.stop_egress(req.egress_id)
