"""Ingress service: authorize (ingressAdmin), call the ingress capability, map its errors.

LiveKit pkg/service/ingress.go: every RPC needs the `ingressAdmin` grant; the rules' errors are
psrpc errors, so their messages carry the `twirp error unknown: ` prefix like the room service's.
"""

from __future__ import annotations

from livekit.protocol import ingress as proto

from ..ingress.info import IngressError
from ..ingress.manager import IngressManager
from ..twirp.errors import TwirpError
from .context import RequestContext


def _mapped(e: IngressError) -> TwirpError:
    return TwirpError.psrpc(e.code, e.message)


class IngressService:
    def __init__(self, manager: IngressManager) -> None:
        self.manager = manager

    async def create_ingress(self, ctx: RequestContext, req: proto.CreateIngressRequest) -> proto.IngressInfo:
        ctx.require_ingress_admin()
        try:
            return await self.manager.create(req)
        except IngressError as e:
            raise _mapped(e) from None

    async def update_ingress(self, ctx: RequestContext, req: proto.UpdateIngressRequest) -> proto.IngressInfo:
        ctx.require_ingress_admin()
        try:
            return await self.manager.update(req)
        except IngressError as e:
            raise _mapped(e) from None

    async def list_ingress(self, ctx: RequestContext, req: proto.ListIngressRequest) -> proto.ListIngressResponse:
        ctx.require_ingress_admin()
        try:
            items = await self.manager.list(req.room_name, req.ingress_id)
        except IngressError as e:
            raise _mapped(e) from None
        return proto.ListIngressResponse(items=items)

    async def delete_ingress(self, ctx: RequestContext, req: proto.DeleteIngressRequest) -> proto.IngressInfo:
        ctx.require_ingress_admin()
        try:
            return await self.manager.delete(req.ingress_id)
        except IngressError as e:
            raise _mapped(e) from None
