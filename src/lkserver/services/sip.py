"""SIP service: trunks and dispatch rules (stored), outbound calls and transfers (the bridge).

Every RPC of `livekit.SIP` with LiveKit's grants, order of checks and error wording
(livekit pkg/service/sip.go; protocol livekit/sip.go, sip/sip.go; reference server-api.md §7,
media-services.md §3.2). Records are kept in the store under LiveKit's hash names. The calls
themselves are placed by lkserver's own SIP bridge (sip/bridge.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol, TypeVar

from google.protobuf.message import Message
from livekit.protocol import models
from livekit.protocol import sip as proto

from .. import ids
from ..sip import rules
from ..sip.rules import SipRuleError
from ..store import Store
from ..store.base import NS_SIP_DISPATCH_RULE, NS_SIP_INBOUND_TRUNK, NS_SIP_OUTBOUND_TRUNK
from ..twirp.errors import INTERNAL, INVALID_ARGUMENT, NOT_FOUND, UNKNOWN, TwirpError
from .context import RequestContext

T = TypeVar("T", bound=Message)

TRUNK_NOT_FOUND = "requested sip trunk does not exist"
RULE_NOT_FOUND = "requested sip dispatch rule does not exist"
DEFAULT_PAGE_LIMIT = 1000


class SipBridge(Protocol):
    async def create_participant(self, req: proto.CreateSIPParticipantRequest,
                                 trunk: proto.SIPOutboundTrunkInfo | None, call_id: str,
                                 timeout: float) -> proto.SIPParticipantInfo: ...

    async def transfer(self, call_id: str, req: proto.TransferSIPParticipantRequest,
                       timeout: float) -> proto.TransferSIPParticipantResponse: ...


def _invalid(e: SipRuleError) -> TwirpError:
    """A request validation failure, wrapped as twirp.InvalidArgument with the error's text."""
    return TwirpError(INVALID_ARGUMENT, e.msg)


def _raw(e: SipRuleError) -> TwirpError:
    """An error LiveKit returns as it is: psrpc errors gain the prefix, plain ones are unknown."""
    if e.plain:
        return TwirpError(UNKNOWN, e.msg)
    if e.psrpc:
        return TwirpError.psrpc(e.code, e.msg)
    return TwirpError(e.code, e.msg)


def _now(msg: Message, name: str) -> None:
    getattr(msg, name).FromNanoseconds(time.time_ns())


def _page(items: list[T], page: models.Pagination | None, key) -> list[T]:  # type: ignore[no-untyped-def]
    items = sorted(items, key=key)
    if page is not None and page.after_id:
        items = [i for i in items if key(i) > page.after_id]
    limit = page.limit if page is not None and page.limit > 0 else DEFAULT_PAGE_LIMIT
    return items[:limit]


def _filter_ids(items: list[T], wanted: Iterable[str], key) -> list[T]:  # type: ignore[no-untyped-def]
    wanted = list(wanted)
    if not wanted:
        return items
    return [i for i in items if key(i) in wanted]


def _shares_number(info: proto.SIPInboundTrunkInfo, numbers: Iterable[str]) -> bool:
    numbers = list(numbers)
    if not numbers or not info.numbers:
        return True
    norm = {rules.normalize_number(n) for n in numbers}
    return any(n in numbers or rules.normalize_number(n) in norm for n in info.numbers)


def _shares_trunk(info: proto.SIPDispatchRuleInfo, trunk_ids: Iterable[str]) -> bool:
    trunk_ids = list(trunk_ids)
    return not trunk_ids or not info.trunk_ids or any(t in trunk_ids for t in info.trunk_ids)


class SipService:
    def __init__(self, store: Store, bridge: SipBridge | None = None) -> None:
        self.store = store
        self.bridge = bridge

    # -- store access -----------------------------------------------------------------------------

    async def inbound_trunks(self) -> list[proto.SIPInboundTrunkInfo]:
        return await self.store.list_messages(NS_SIP_INBOUND_TRUNK, proto.SIPInboundTrunkInfo)

    async def outbound_trunks(self) -> list[proto.SIPOutboundTrunkInfo]:
        return await self.store.list_messages(NS_SIP_OUTBOUND_TRUNK, proto.SIPOutboundTrunkInfo)

    async def dispatch_rules(self) -> list[proto.SIPDispatchRuleInfo]:
        return await self.store.list_messages(NS_SIP_DISPATCH_RULE, proto.SIPDispatchRuleInfo)

    async def _load(self, ns: str, key: str, cls: type[T], missing: str) -> T:
        info = await self.store.get_message(ns, key, cls)
        if info is None:
            raise TwirpError(NOT_FOUND, missing)
        return info

    # -- inbound trunks ---------------------------------------------------------------------------

    async def create_sip_inbound_trunk(self, ctx: RequestContext,
                                       req: proto.CreateSIPInboundTrunkRequest) -> proto.SIPInboundTrunkInfo:
        ctx.require_sip_admin()
        if not req.HasField("trunk"):
            raise TwirpError(INVALID_ARGUMENT, "missing trunk")
        info = proto.SIPInboundTrunkInfo()
        info.CopyFrom(req.trunk)
        if info.sip_trunk_id:
            raise TwirpError(INVALID_ARGUMENT, "trunk id must not be set")
        try:
            rules.validate_inbound_trunk(info)
        except SipRuleError as e:
            raise _invalid(e) from None
        existing = [t for t in await self.inbound_trunks() if _shares_number(t, info.numbers)]
        try:
            rules.validate_trunks([*existing, info])  # the new one is "<new>" in a conflict
        except SipRuleError as e:
            raise _raw(e) from None
        info.sip_trunk_id = ids.new_id(ids.SIP_TRUNK)
        _now(info, "created_at")
        _now(info, "updated_at")
        await self.store.put_message(NS_SIP_INBOUND_TRUNK, info.sip_trunk_id, info)
        return info

    async def update_sip_inbound_trunk(self, ctx: RequestContext,
                                       req: proto.UpdateSIPInboundTrunkRequest) -> proto.SIPInboundTrunkInfo:
        ctx.require_sip_admin()
        action = req.WhichOneof("action")
        try:
            if not req.sip_trunk_id:
                raise SipRuleError("trunk id must be set")
            if action is None:
                raise SipRuleError("missing or unsupported update action")
            if action == "replace":
                if req.replace.sip_trunk_id and req.replace.sip_trunk_id != req.sip_trunk_id:
                    raise SipRuleError("trunk id in the info must be empty or match the id in the update")
                rules.validate_inbound_trunk(req.replace)
            else:
                for name in ("numbers", "allowed_addresses", "allowed_numbers"):
                    if req.update.HasField(name):
                        rules.validate_list_update(getattr(req.update, name))
        except SipRuleError as e:
            raise _invalid(e) from None
        current = await self._load(NS_SIP_INBOUND_TRUNK, req.sip_trunk_id, proto.SIPInboundTrunkInfo,
                                   TRUNK_NOT_FOUND)
        info = proto.SIPInboundTrunkInfo()
        try:
            if action == "replace":
                info.CopyFrom(req.replace)
                info.sip_trunk_id = current.sip_trunk_id
                info.created_at.CopyFrom(current.created_at)
            else:
                info.CopyFrom(current)
                rules.apply_inbound_update(info, req.update)
        except SipRuleError as e:
            raise _raw(e) from None
        others = [t for t in await self.inbound_trunks() if _shares_number(t, info.numbers)]
        try:
            rules.validate_trunks([info if t.sip_trunk_id == info.sip_trunk_id else t for t in others])
        except SipRuleError as e:
            raise _raw(e) from None
        _now(info, "updated_at")
        await self.store.put_message(NS_SIP_INBOUND_TRUNK, info.sip_trunk_id, info)
        return info

    async def get_sip_inbound_trunk(self, ctx: RequestContext,
                                    req: proto.GetSIPInboundTrunkRequest) -> proto.GetSIPInboundTrunkResponse:
        ctx.require_sip_admin()
        if not req.sip_trunk_id:
            raise TwirpError(INVALID_ARGUMENT, "trunk ID is required")
        trunk = await self._load(NS_SIP_INBOUND_TRUNK, req.sip_trunk_id, proto.SIPInboundTrunkInfo, TRUNK_NOT_FOUND)
        return proto.GetSIPInboundTrunkResponse(trunk=trunk)

    async def list_sip_inbound_trunk(self, ctx: RequestContext,
                                     req: proto.ListSIPInboundTrunkRequest) -> proto.ListSIPInboundTrunkResponse:
        ctx.require_sip_admin()
        items = _filter_ids(await self.inbound_trunks(), req.trunk_ids, lambda t: t.sip_trunk_id)
        items = [t for t in items if _shares_number(t, req.numbers)]
        page = req.page if req.HasField("page") else None
        return proto.ListSIPInboundTrunkResponse(items=_page(items, page, lambda t: t.sip_trunk_id))

    # -- outbound trunks --------------------------------------------------------------------------

    async def create_sip_outbound_trunk(self, ctx: RequestContext,
                                        req: proto.CreateSIPOutboundTrunkRequest) -> proto.SIPOutboundTrunkInfo:
        ctx.require_sip_admin()
        if not req.HasField("trunk"):
            raise TwirpError(INVALID_ARGUMENT, "missing trunk")
        info = proto.SIPOutboundTrunkInfo()
        info.CopyFrom(req.trunk)
        if info.sip_trunk_id:
            raise TwirpError(INVALID_ARGUMENT, "trunk id must not be set")
        try:
            rules.validate_outbound_trunk(info)
        except SipRuleError as e:
            raise _invalid(e) from None
        info.sip_trunk_id = ids.new_id(ids.SIP_TRUNK)
        _now(info, "created_at")
        _now(info, "updated_at")
        await self.store.put_message(NS_SIP_OUTBOUND_TRUNK, info.sip_trunk_id, info)
        return info

    async def update_sip_outbound_trunk(self, ctx: RequestContext,
                                        req: proto.UpdateSIPOutboundTrunkRequest) -> proto.SIPOutboundTrunkInfo:
        ctx.require_sip_admin()
        action = req.WhichOneof("action")
        try:
            if not req.sip_trunk_id:
                raise SipRuleError("trunk id must be set")
            if action is None:
                raise SipRuleError("missing or unsupported update action")
            if action == "replace":
                if req.replace.sip_trunk_id and req.replace.sip_trunk_id != req.sip_trunk_id:
                    raise SipRuleError("trunk id in the info must be empty or match the id in the update")
                rules.validate_outbound_trunk(req.replace)
            elif req.update.HasField("numbers"):
                rules.validate_list_update(req.update.numbers)
        except SipRuleError as e:
            raise _invalid(e) from None
        current = await self._load(NS_SIP_OUTBOUND_TRUNK, req.sip_trunk_id, proto.SIPOutboundTrunkInfo,
                                   TRUNK_NOT_FOUND)
        info = proto.SIPOutboundTrunkInfo()
        try:
            if action == "replace":
                info.CopyFrom(req.replace)
                info.sip_trunk_id = current.sip_trunk_id
                info.created_at.CopyFrom(current.created_at)
            else:
                info.CopyFrom(current)
                rules.apply_outbound_update(info, req.update)
        except SipRuleError as e:
            raise _raw(e) from None
        _now(info, "updated_at")
        await self.store.put_message(NS_SIP_OUTBOUND_TRUNK, info.sip_trunk_id, info)
        return info

    async def get_sip_outbound_trunk(self, ctx: RequestContext,
                                     req: proto.GetSIPOutboundTrunkRequest) -> proto.GetSIPOutboundTrunkResponse:
        ctx.require_sip_admin()
        if not req.sip_trunk_id:
            raise TwirpError(INVALID_ARGUMENT, "trunk ID is required")
        trunk = await self._load(NS_SIP_OUTBOUND_TRUNK, req.sip_trunk_id, proto.SIPOutboundTrunkInfo,
                                 TRUNK_NOT_FOUND)
        return proto.GetSIPOutboundTrunkResponse(trunk=trunk)

    async def list_sip_outbound_trunk(self, ctx: RequestContext,
                                      req: proto.ListSIPOutboundTrunkRequest) -> proto.ListSIPOutboundTrunkResponse:
        ctx.require_sip_admin()
        items = _filter_ids(await self.outbound_trunks(), req.trunk_ids, lambda t: t.sip_trunk_id)
        wanted = list(req.numbers)
        if wanted:
            items = [t for t in items if not t.numbers or any(n in wanted for n in t.numbers)]
        page = req.page if req.HasField("page") else None
        return proto.ListSIPOutboundTrunkResponse(items=_page(items, page, lambda t: t.sip_trunk_id))

    # -- both kinds -------------------------------------------------------------------------------

    async def list_sip_trunk(self, ctx: RequestContext, req: proto.ListSIPTrunkRequest) -> proto.ListSIPTrunkResponse:
        """Deprecated: every trunk in the legacy SIPTrunkInfo shape."""
        ctx.require_sip_admin()
        items = []
        for t in await self.inbound_trunks():
            items.append(proto.SIPTrunkInfo(
                sip_trunk_id=t.sip_trunk_id, kind=proto.SIPTrunkInfo.TrunkKind.TRUNK_INBOUND,
                inbound_addresses=t.allowed_addresses, inbound_numbers=t.allowed_numbers,
                outbound_number=t.numbers[0] if t.numbers else "",
                inbound_username=t.auth_username, inbound_password=t.auth_password,
                name=t.name, metadata=t.metadata))
        for o in await self.outbound_trunks():
            items.append(proto.SIPTrunkInfo(
                sip_trunk_id=o.sip_trunk_id, kind=proto.SIPTrunkInfo.TrunkKind.TRUNK_OUTBOUND,
                outbound_address=o.address, transport=o.transport,
                outbound_number=o.numbers[0] if o.numbers else "",
                outbound_username=o.auth_username, outbound_password=o.auth_password,
                name=o.name, metadata=o.metadata))
        page = req.page if req.HasField("page") else None
        return proto.ListSIPTrunkResponse(items=_page(items, page, lambda t: t.sip_trunk_id))

    async def delete_sip_trunk(self, ctx: RequestContext, req: proto.DeleteSIPTrunkRequest) -> proto.SIPTrunkInfo:
        """Deletes from every trunk table without an existence check, as LiveKit does."""
        ctx.require_sip_admin()
        if not req.sip_trunk_id:
            raise TwirpError(INVALID_ARGUMENT, "trunk ID is required")
        await self.store.delete_message(NS_SIP_INBOUND_TRUNK, req.sip_trunk_id)
        await self.store.delete_message(NS_SIP_OUTBOUND_TRUNK, req.sip_trunk_id)
        return proto.SIPTrunkInfo(sip_trunk_id=req.sip_trunk_id)

    # -- dispatch rules ---------------------------------------------------------------------------

    async def create_sip_dispatch_rule(self, ctx: RequestContext,
                                       req: proto.CreateSIPDispatchRuleRequest) -> proto.SIPDispatchRuleInfo:
        ctx.require_sip_admin()
        info = proto.SIPDispatchRuleInfo()
        if req.HasField("dispatch_rule"):
            info.CopyFrom(req.dispatch_rule)
            if info.sip_dispatch_rule_id:
                raise TwirpError(INVALID_ARGUMENT, "rule id must not be set")
        else:  # the deprecated flat request
            if req.HasField("rule"):
                info.rule.CopyFrom(req.rule)
            info.trunk_ids.extend(req.trunk_ids)
            info.inbound_numbers.extend(req.inbound_numbers)
            info.hide_phone_number = req.hide_phone_number
            info.name, info.metadata, info.room_preset = req.name, req.metadata, req.room_preset
            info.attributes.update(req.attributes)
            if req.HasField("room_config"):
                info.room_config.CopyFrom(req.room_config)
        try:
            rules.validate_rule(info)
        except SipRuleError as e:
            raise _invalid(e) from None
        existing = [r for r in await self.dispatch_rules() if _shares_trunk(r, info.trunk_ids)]
        try:
            rules.validate_rules([*existing, info])
        except SipRuleError as e:
            raise _raw(e) from None
        info.sip_dispatch_rule_id = ids.new_id(ids.SIP_DISPATCH_RULE)
        _now(info, "created_at")
        _now(info, "updated_at")
        await self.store.put_message(NS_SIP_DISPATCH_RULE, info.sip_dispatch_rule_id, info)
        return info

    async def update_sip_dispatch_rule(self, ctx: RequestContext,
                                       req: proto.UpdateSIPDispatchRuleRequest) -> proto.SIPDispatchRuleInfo:
        ctx.require_sip_admin()
        action = req.WhichOneof("action")
        try:
            if not req.sip_dispatch_rule_id:
                raise SipRuleError("rule id must be set")
            if action is None:
                raise SipRuleError("missing or unsupported update action")
            if action == "replace":
                if req.replace.sip_dispatch_rule_id and req.replace.sip_dispatch_rule_id != req.sip_dispatch_rule_id:
                    raise SipRuleError("rule id in the info must be empty or match the id in the update")
                rules.validate_rule(req.replace)
            elif req.update.HasField("trunk_ids"):
                rules.validate_list_update(req.update.trunk_ids)
        except SipRuleError as e:
            raise _invalid(e) from None
        current = await self._load(NS_SIP_DISPATCH_RULE, req.sip_dispatch_rule_id, proto.SIPDispatchRuleInfo,
                                   RULE_NOT_FOUND)
        info = proto.SIPDispatchRuleInfo()
        try:
            if action == "replace":
                info.CopyFrom(req.replace)
                info.sip_dispatch_rule_id = current.sip_dispatch_rule_id
                info.created_at.CopyFrom(current.created_at)
            else:
                info.CopyFrom(current)
                rules.apply_rule_update(info, req.update)
        except SipRuleError as e:
            raise _raw(e) from None
        others = [r for r in await self.dispatch_rules() if _shares_trunk(r, info.trunk_ids)]
        try:
            rules.validate_rules([info if r.sip_dispatch_rule_id == info.sip_dispatch_rule_id else r
                                  for r in others])
        except SipRuleError as e:
            raise _raw(e) from None
        _now(info, "updated_at")
        await self.store.put_message(NS_SIP_DISPATCH_RULE, info.sip_dispatch_rule_id, info)
        return info

    async def list_sip_dispatch_rule(self, ctx: RequestContext,
                                     req: proto.ListSIPDispatchRuleRequest) -> proto.ListSIPDispatchRuleResponse:
        ctx.require_sip_admin()
        items = _filter_ids(await self.dispatch_rules(), req.dispatch_rule_ids, lambda r: r.sip_dispatch_rule_id)
        items = [r for r in items if _shares_trunk(r, req.trunk_ids)]
        page = req.page if req.HasField("page") else None
        return proto.ListSIPDispatchRuleResponse(items=_page(items, page, lambda r: r.sip_dispatch_rule_id))

    async def delete_sip_dispatch_rule(self, ctx: RequestContext,
                                       req: proto.DeleteSIPDispatchRuleRequest) -> proto.SIPDispatchRuleInfo:
        ctx.require_sip_admin()
        if not req.sip_dispatch_rule_id:
            raise TwirpError(INVALID_ARGUMENT, "dispatch rule ID is required")
        info = await self._load(NS_SIP_DISPATCH_RULE, req.sip_dispatch_rule_id, proto.SIPDispatchRuleInfo,
                                RULE_NOT_FOUND)
        await self.store.delete_message(NS_SIP_DISPATCH_RULE, info.sip_dispatch_rule_id)
        return info

    # -- calls ------------------------------------------------------------------------------------

    async def create_sip_participant(self, ctx: RequestContext,
                                     req: proto.CreateSIPParticipantRequest) -> proto.SIPParticipantInfo:
        ctx.require_sip_call()
        try:
            validate_create_participant(req)
        except SipRuleError as e:
            raise _invalid(e) from None
        trunk = None
        if req.sip_trunk_id:
            trunk = await self._load(NS_SIP_OUTBOUND_TRUNK, req.sip_trunk_id, proto.SIPOutboundTrunkInfo,
                                     TRUNK_NOT_FOUND)
        if self.bridge is None:
            raise TwirpError(INTERNAL, "sip not connected")
        timeout = 80.0 if req.wait_until_answered else 30.0
        return await self.bridge.create_participant(req, trunk, ids.new_id(ids.SIP_CALL), timeout)

    async def transfer_sip_participant(self, ctx: RequestContext,
                                       req: proto.TransferSIPParticipantRequest) -> proto.TransferSIPParticipantResponse:
        if not req.room_name:
            raise TwirpError.psrpc(INVALID_ARGUMENT, "Missing room name")
        if not req.participant_identity:
            raise TwirpError.psrpc(INVALID_ARGUMENT, "Missing participant identity")
        ctx.require_sip_call()
        ctx.require_admin(req.room_name)
        try:
            req.transfer_to = validate_transfer(req)
        except SipRuleError as e:
            raise _invalid(e) from None
        if self.bridge is None:
            raise TwirpError(INTERNAL, "sip not connected")
        call_id = self.call_id_of(req.room_name, req.participant_identity)
        timeout = 30.0
        if req.HasField("ringing_timeout"):
            timeout = req.ringing_timeout.seconds + req.ringing_timeout.nanos / 1e9
        return await self.bridge.transfer(call_id, req, timeout)

    # set by the server: (room, identity) -> the participant's attributes, or None if absent
    participant_attributes = staticmethod(lambda room, identity: None)

    def call_id_of(self, room: str, identity: str) -> str:
        attrs = self.participant_attributes(room, identity)
        if attrs is None:
            raise TwirpError.psrpc(NOT_FOUND, "participant does not exist")
        call_id = attrs.get(rules.ATTR_CALL_ID)
        if not call_id:
            raise TwirpError.psrpc(INVALID_ARGUMENT, "no SIP session associated with participant")
        return call_id


def validate_create_participant(req: proto.CreateSIPParticipantRequest) -> None:
    """CreateSIPParticipantRequest.ValidateResult (protocol livekit/sip.go)."""
    if not req.sip_trunk_id and not req.HasField("trunk") and not req.sip_number:
        raise SipRuleError("missing sip trunk id and sip number")
    if req.HasField("trunk"):
        t = req.trunk
        if not t.hostname:
            raise SipRuleError("no outbound hostname specified")
        rules.validate_hostname(t.hostname, "trunk hostname")
        rules.validate_hostname(t.from_host, "from_host")
    if not req.sip_call_to:
        raise SipRuleError("missing sip callee number")
    if "@" in req.sip_call_to:
        raise SipRuleError("SipCallTo should be a phone number or SIP user, not a full SIP URI")
    if req.to_user_override and "@" in req.to_user_override:
        raise SipRuleError("ToUserOverride should be a phone number or SIP user, not a full SIP URI")
    if not req.room_name:
        raise SipRuleError("missing room name")
    if req.HasField("display_name") and len(req.display_name) > 128:
        raise SipRuleError("DisplayName too long (max 128 characters)")
    rules.validate_headers(dict(req.headers))
    rules.validate_media(req.media if req.HasField("media") else None)


def validate_transfer(req: proto.TransferSIPParticipantRequest) -> str:
    """TransferSIPParticipantRequest.ValidateResult; returns transfer_to as LiveKit rewrites it."""
    if not req.transfer_to:
        raise SipRuleError("missing transfer to")
    inner = req.transfer_to
    if inner.startswith("<") and inner.endswith(">"):
        inner = inner[1:-1]
    if not inner.startswith(("sip:", "sips:", "tel:")):
        raise SipRuleError("transfer_to must be a valid SIP(s) or TEL URI (sip:, sips: or tel:)")
    rules.validate_headers(dict(req.headers))
    return f"<{inner}>" if inner.startswith(("sip:", "sips:")) else inner


def _route_aliases() -> None:
    """The Twirp router derives handler names letter by letter (ListSIPInboundTrunk ->
    list_s_i_p_inbound_trunk); answer to those names as well as to the readable ones."""
    import re

    from ..twirp.server import snake_case

    for m in proto.DESCRIPTOR.services_by_name["SIP"].methods:
        readable = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", m.name).lower()
        routed = snake_case(m.name)
        if routed != readable and hasattr(SipService, readable):
            setattr(SipService, routed, getattr(SipService, readable))


_route_aliases()
