"""The exact request every `lkserver.api` client method sends, checked on a capture server.

Egress, Ingress, SIP and AgentDispatchService are not served by lkserver yet, so their methods
are checked here by what they put on the wire: the path `/twirp/livekit.<Svc>/<Method>`,
`Content-Type: application/protobuf`, a body that parses as the RPC's request type and equals
what was passed, and a Bearer token that verifies with the key and carries exactly the grant
the RPC needs (reference server-api.md §2.6). Each one is also sent through the official
`livekit-api` (where it has the method) and the two requests compared.
SIP, AgentDispatchService, Ingress and Egress requests are also sent to a live server
(test_sip_and_dispatch_requests_served_live; Ingress end to end in tests/ingress, Egress in
tests/egress and test_egress_served_live_by_both_sdks).
RoomService is live-tested in test_sdk_room_service.py; it is captured here as well.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import livekit.api as official
import livekit.api._dial_timeout as official_dial
import pytest
from aiohttp import web
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from livekit.protocol import agent_dispatch, egress, ingress, models, room, sip

from lkserver import api
from lkserver.api import sip_service
from lkserver.auth import hs256

KEY, SECRET = "APIcapture", "capture-secret-of-at-least-32-chars"
SERVICES = {"RoomService": room, "Egress": egress, "Ingress": ingress, "SIP": sip,
            "AgentDispatchService": agent_dispatch}
# (service, method) -> (request class, response class), from the protobuf service descriptors
RPC_TYPES = {
    (svc, m.name): (GetMessageClass(m.input_type), GetMessageClass(m.output_type))
    for svc, mod in SERVICES.items() for m in mod.DESCRIPTOR.services_by_name[svc].methods
}


def canned(cls: type[Message], method: str) -> Message:
    """A response with something in it, so the client's decoding is checked too."""
    if cls is agent_dispatch.ListAgentDispatchResponse:
        return cls(agent_dispatches=[agent_dispatch.AgentDispatch(id="AD_canned", room="r")])
    msg = cls()
    for f in cls.DESCRIPTOR.fields:
        if f.type == f.TYPE_STRING and not f.is_repeated:
            setattr(msg, f.name, f"canned-{method}")
            break
    return msg


@dataclass
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class CaptureServer:
    """An aiohttp server on an ephemeral port that records requests and answers like Twirp."""

    url: str = ""
    requests: list[Captured] = field(default_factory=list)
    # (status, body, content type) to answer instead of the canned response
    error: tuple[int, bytes, str] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Captured(request.method, request.path, dict(request.headers),
                                      await request.read()))
        if self.error is not None:
            status, body, ctype = self.error
            return web.Response(status=status, body=body, headers={"Content-Type": ctype})
        svc, method = request.path.split("/")[-2:]
        _, response_cls = RPC_TYPES[(svc.removeprefix("livekit."), method)]
        return web.Response(body=canned(response_cls, method).SerializeToString(),
                            content_type="application/protobuf")

    def take(self) -> Captured:
        assert len(self.requests) == 1, [r.path for r in self.requests]
        return self.requests.pop()


@pytest.fixture
async def capture() -> Any:
    server = CaptureServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


# --- expected grants (server-api.md §2.6), as the claim JSON the token must carry

DEFAULTS = {"canPublish": True, "canSubscribe": True, "canPublishData": True}
CREATE = {"video": {"roomCreate": True, **DEFAULTS}}
LIST = {"video": {"roomList": True, **DEFAULTS}}
RECORD = {"video": {"roomRecord": True, **DEFAULTS}}
INGRESS = {"video": {"ingressAdmin": True, **DEFAULTS}}
SIP_ADMIN = {"video": dict(DEFAULTS), "sip": {"admin": True, "call": False}}
SIP_CALL = {"video": dict(DEFAULTS), "sip": {"admin": False, "call": True}}


def admin(room_name: str, destination: str | None = None) -> dict[str, Any]:
    video: dict[str, Any] = {"roomAdmin": True, "room": room_name}
    if destination is not None:
        video["destinationRoom"] = destination
    return {"video": {**video, **DEFAULTS}}


def transfer_grant(room_name: str) -> dict[str, Any]:
    return {**admin(room_name), "sip": {"admin": False, "call": True}}


# --- every client method: how to call it, and what must go on the wire


@dataclass
class Call:
    name: str
    call: Callable[[Any], Awaitable[Any]]  # given a LiveKitAPI (ours or the official)
    rpc: str  # "<Service>/<Method>"
    request: Message  # what the body must parse to
    grant: dict[str, Any]
    in_official: bool = True
    deprecated: bool = False
    check_result: Callable[[Any], bool] | None = None


TRUNK_IN = sip.SIPInboundTrunkInfo(name="in", numbers=["+15550100"], allowed_addresses=["10.0.0.0/8"])
TRUNK_OUT = sip.SIPOutboundTrunkInfo(name="out", address="sip.example.com", numbers=["+15550101"],
                                     transport=sip.SIPTransport.SIP_TRANSPORT_TCP)
RULE = sip.SIPDispatchRule(dispatch_rule_direct=sip.SIPDispatchRuleDirect(room_name="r", pin="1234"))
RULE_INFO = sip.SIPDispatchRuleInfo(name="rule", trunk_ids=["ST_a"], rule=RULE, attributes={"k": "v"})


def calls() -> list[Call]:
    E, I, S, A, R = "Egress", "Ingress", "SIP", "AgentDispatchService", "RoomService"
    rc = egress.RoomCompositeEgressRequest(room_name="r", layout="grid", audio_only=True,
                                           file_outputs=[egress.EncodedFileOutput(filepath="a.mp4")])
    web_req = egress.WebEgressRequest(url="https://example.com", video_only=True)
    part = egress.ParticipantEgressRequest(room_name="r", identity="alice", screen_share=True)
    tc = egress.TrackCompositeEgressRequest(room_name="r", audio_track_id="TR_a", video_track_id="TR_v")
    track = egress.TrackEgressRequest(room_name="r", track_id="TR_a", websocket_url="wss://x")
    start = egress.StartEgressRequest(room_name="r")
    layout = egress.UpdateLayoutRequest(egress_id="EG_x", layout="speaker")
    stream = egress.UpdateStreamRequest(egress_id="EG_x", add_output_urls=["rtmp://a"], remove_output_urls=["rtmp://b"])
    list_eg = egress.ListEgressRequest(room_name="r", active=True)
    stop = egress.StopEgressRequest(egress_id="EG_x")
    c_ing = ingress.CreateIngressRequest(input_type=ingress.IngressInput.WHIP_INPUT, name="n", room_name="r",
                                         participant_identity="obs", enable_transcoding=False)
    u_ing = ingress.UpdateIngressRequest(ingress_id="IN_x", name="n2", participant_metadata="m")
    l_ing = ingress.ListIngressRequest(room_name="r")
    d_ing = ingress.DeleteIngressRequest(ingress_id="IN_x")
    c_in = sip.CreateSIPInboundTrunkRequest(trunk=TRUNK_IN)
    c_out = sip.CreateSIPOutboundTrunkRequest(trunk=TRUNK_OUT)
    g_in = sip.GetSIPInboundTrunkRequest(sip_trunk_id="ST_in")
    g_out = sip.GetSIPOutboundTrunkRequest(sip_trunk_id="ST_out")
    l_in = sip.ListSIPInboundTrunkRequest(trunk_ids=["ST_in"], numbers=["+1"])
    l_out = sip.ListSIPOutboundTrunkRequest(trunk_ids=["ST_out"])
    l_trunk = sip.ListSIPTrunkRequest()
    d_trunk = sip.DeleteSIPTrunkRequest(sip_trunk_id="ST_x")
    c_rule = sip.CreateSIPDispatchRuleRequest(dispatch_rule=RULE_INFO)
    l_rule = sip.ListSIPDispatchRuleRequest(dispatch_rule_ids=["SDR_x"])
    d_rule = sip.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id="SDR_x")
    in_fields = sip.SIPInboundTrunkUpdate(name="renamed", auth_username="u")
    in_fields.numbers.add.extend(["+2"])
    in_fields.numbers.remove.extend(["+1"])
    in_fields.allowed_addresses.set.extend(["1.2.3.4"])
    out_fields = sip.SIPOutboundTrunkUpdate(address="new.example.com",
                                            transport=sip.SIPTransport.SIP_TRANSPORT_TLS, metadata="m")
    out_fields.numbers.set.extend(["+3"])
    rule_fields = sip.SIPDispatchRuleUpdate(name="r2", rule=RULE, attributes={"a": "b"})
    rule_fields.trunk_ids.set.extend(["ST_1", "ST_2"])
    c_part = sip.CreateSIPParticipantRequest(sip_trunk_id="ST_out", sip_call_to="+15550199",
                                             room_name="r", participant_identity="phone")
    c_part_wait = sip.CreateSIPParticipantRequest(sip_call_to="+15550199", room_name="r",
                                                  wait_until_answered=True,
                                                  ringing_timeout=Duration(seconds=30),
                                                  sip_trunk_id="ST_kw")
    outbound = sip.SIPOutboundConfig(hostname="sip.example.com", auth_username="u")
    c_part_cfg = sip.CreateSIPParticipantRequest(sip_call_to="+1", room_name="r", trunk=outbound)
    xfer = sip.TransferSIPParticipantRequest(participant_identity="phone", room_name="call-room",
                                             transfer_to="tel:+15550123", play_dialtone=True)
    xfer_expected = sip.TransferSIPParticipantRequest()
    xfer_expected.CopyFrom(xfer)
    xfer_expected.ringing_timeout.seconds = 30
    c_disp = agent_dispatch.CreateAgentDispatchRequest(agent_name="bot", room="r", metadata="{}")

    def fresh(msg: Message) -> Message:
        copy = type(msg)()
        copy.CopyFrom(msg)
        return copy

    out = [
        Call("egress.start_room_composite_egress", lambda lk: lk.egress.start_room_composite_egress(fresh(rc)),
             f"{E}/StartRoomCompositeEgress", rc, RECORD),
        Call("egress.start_web_egress", lambda lk: lk.egress.start_web_egress(fresh(web_req)),
             f"{E}/StartWebEgress", web_req, RECORD),
        Call("egress.start_participant_egress", lambda lk: lk.egress.start_participant_egress(fresh(part)),
             f"{E}/StartParticipantEgress", part, RECORD),
        Call("egress.start_track_composite_egress",
             lambda lk: lk.egress.start_track_composite_egress(fresh(tc)), f"{E}/StartTrackCompositeEgress", tc, RECORD),
        Call("egress.start_track_egress", lambda lk: lk.egress.start_track_egress(fresh(track)),
             f"{E}/StartTrackEgress", track, RECORD),
        Call("egress.start_egress", lambda lk: lk.egress.start_egress(fresh(start)), f"{E}/StartEgress", start, RECORD),
        Call("egress.update_layout", lambda lk: lk.egress.update_layout(fresh(layout)), f"{E}/UpdateLayout", layout, RECORD),
        Call("egress.update_stream", lambda lk: lk.egress.update_stream(fresh(stream)), f"{E}/UpdateStream", stream, RECORD),
        Call("egress.list_egress", lambda lk: lk.egress.list_egress(fresh(list_eg)), f"{E}/ListEgress", list_eg, RECORD),
        Call("egress.stop_egress", lambda lk: lk.egress.stop_egress(fresh(stop)), f"{E}/StopEgress", stop, RECORD),

        Call("ingress.create_ingress", lambda lk: lk.ingress.create_ingress(fresh(c_ing)), f"{I}/CreateIngress", c_ing, INGRESS),
        Call("ingress.update_ingress", lambda lk: lk.ingress.update_ingress(fresh(u_ing)), f"{I}/UpdateIngress", u_ing, INGRESS),
        Call("ingress.list_ingress", lambda lk: lk.ingress.list_ingress(fresh(l_ing)), f"{I}/ListIngress", l_ing, INGRESS),
        Call("ingress.delete_ingress", lambda lk: lk.ingress.delete_ingress(fresh(d_ing)), f"{I}/DeleteIngress", d_ing, INGRESS),

        Call("sip.create_inbound_trunk", lambda lk: lk.sip.create_inbound_trunk(fresh(c_in)),
             f"{S}/CreateSIPInboundTrunk", c_in, SIP_ADMIN),
        Call("sip.get_inbound_trunk", lambda lk: lk.sip.get_inbound_trunk(fresh(g_in)),
             f"{S}/GetSIPInboundTrunk", g_in, SIP_ADMIN, in_official=False),
        Call("sip.update_inbound_trunk", lambda lk: lk.sip.update_inbound_trunk("ST_in", fresh(TRUNK_IN)),
             f"{S}/UpdateSIPInboundTrunk", sip.UpdateSIPInboundTrunkRequest(sip_trunk_id="ST_in", replace=TRUNK_IN),
             SIP_ADMIN),
        Call("sip.update_inbound_trunk_fields",
             lambda lk: lk.sip.update_inbound_trunk_fields(
                 "ST_in", numbers=models.ListUpdate(add=["+2"], remove=["+1"]), allowed_addresses=["1.2.3.4"],
                 name="renamed", auth_username="u"),
             f"{S}/UpdateSIPInboundTrunk", sip.UpdateSIPInboundTrunkRequest(sip_trunk_id="ST_in", update=in_fields),
             SIP_ADMIN),
        Call("sip.list_inbound_trunk", lambda lk: lk.sip.list_inbound_trunk(fresh(l_in)),
             f"{S}/ListSIPInboundTrunk", l_in, SIP_ADMIN),
        Call("sip.create_outbound_trunk", lambda lk: lk.sip.create_outbound_trunk(fresh(c_out)),
             f"{S}/CreateSIPOutboundTrunk", c_out, SIP_ADMIN),
        Call("sip.get_outbound_trunk", lambda lk: lk.sip.get_outbound_trunk(fresh(g_out)),
             f"{S}/GetSIPOutboundTrunk", g_out, SIP_ADMIN, in_official=False),
        Call("sip.update_outbound_trunk", lambda lk: lk.sip.update_outbound_trunk("ST_out", fresh(TRUNK_OUT)),
             f"{S}/UpdateSIPOutboundTrunk",
             sip.UpdateSIPOutboundTrunkRequest(sip_trunk_id="ST_out", replace=TRUNK_OUT), SIP_ADMIN),
        Call("sip.update_outbound_trunk_fields",
             lambda lk: lk.sip.update_outbound_trunk_fields(
                 "ST_out", address="new.example.com", transport=sip.SIPTransport.SIP_TRANSPORT_TLS,
                 numbers=["+3"], metadata="m"),
             f"{S}/UpdateSIPOutboundTrunk",
             sip.UpdateSIPOutboundTrunkRequest(sip_trunk_id="ST_out", update=out_fields), SIP_ADMIN),
        Call("sip.list_outbound_trunk", lambda lk: lk.sip.list_outbound_trunk(fresh(l_out)),
             f"{S}/ListSIPOutboundTrunk", l_out, SIP_ADMIN),
        Call("sip.list_sip_trunk", lambda lk: lk.sip.list_sip_trunk(fresh(l_trunk)),
             f"{S}/ListSIPTrunk", l_trunk, SIP_ADMIN, in_official=False, deprecated=True),
        Call("sip.delete_trunk", lambda lk: lk.sip.delete_trunk(fresh(d_trunk)), f"{S}/DeleteSIPTrunk", d_trunk, SIP_ADMIN),
        Call("sip.create_dispatch_rule", lambda lk: lk.sip.create_dispatch_rule(fresh(c_rule)),
             f"{S}/CreateSIPDispatchRule", c_rule, SIP_ADMIN),
        Call("sip.update_dispatch_rule", lambda lk: lk.sip.update_dispatch_rule("SDR_x", fresh(RULE_INFO)),
             f"{S}/UpdateSIPDispatchRule",
             sip.UpdateSIPDispatchRuleRequest(sip_dispatch_rule_id="SDR_x", replace=RULE_INFO), SIP_ADMIN),
        Call("sip.update_dispatch_rule_fields",
             lambda lk: lk.sip.update_dispatch_rule_fields("SDR_x", trunk_ids=["ST_1", "ST_2"], rule=RULE,
                                                           name="r2", attributes={"a": "b"}),
             f"{S}/UpdateSIPDispatchRule",
             sip.UpdateSIPDispatchRuleRequest(sip_dispatch_rule_id="SDR_x", update=rule_fields), SIP_ADMIN),
        Call("sip.list_dispatch_rule", lambda lk: lk.sip.list_dispatch_rule(fresh(l_rule)),
             f"{S}/ListSIPDispatchRule", l_rule, SIP_ADMIN),
        Call("sip.delete_dispatch_rule", lambda lk: lk.sip.delete_dispatch_rule(fresh(d_rule)),
             f"{S}/DeleteSIPDispatchRule", d_rule, SIP_ADMIN),
        Call("sip.create_sip_participant", lambda lk: lk.sip.create_sip_participant(fresh(c_part)),
             f"{S}/CreateSIPParticipant", c_part, SIP_CALL),
        Call("sip.create_sip_participant(wait, trunk_id=)",
             lambda lk: lk.sip.create_sip_participant(
                 sip.CreateSIPParticipantRequest(sip_call_to="+15550199", room_name="r", wait_until_answered=True),
                 trunk_id="ST_kw", timeout=5),
             f"{S}/CreateSIPParticipant", c_part_wait, SIP_CALL),
        # the official's outbound_trunk_config assigns a message field, which protobuf refuses
        Call("sip.create_sip_participant(outbound_trunk_config=)",
             lambda lk: lk.sip.create_sip_participant(
                 sip.CreateSIPParticipantRequest(sip_call_to="+1", room_name="r"), outbound_trunk_config=outbound),
             f"{S}/CreateSIPParticipant", c_part_cfg, SIP_CALL, in_official=False),
        Call("sip.transfer_sip_participant", lambda lk: lk.sip.transfer_sip_participant(fresh(xfer)),
             f"{S}/TransferSIPParticipant", xfer_expected, transfer_grant("call-room")),

        Call("agent_dispatch.create_dispatch", lambda lk: lk.agent_dispatch.create_dispatch(fresh(c_disp)),
             f"{A}/CreateDispatch", c_disp, admin("r")),
        Call("agent_dispatch.delete_dispatch", lambda lk: lk.agent_dispatch.delete_dispatch("AD_x", "r"),
             f"{A}/DeleteDispatch", agent_dispatch.DeleteAgentDispatchRequest(dispatch_id="AD_x", room="r"), admin("r")),
        Call("agent_dispatch.list_dispatch", lambda lk: lk.agent_dispatch.list_dispatch("r"),
             f"{A}/ListDispatch", agent_dispatch.ListAgentDispatchRequest(room="r"), admin("r"),
             check_result=lambda res: [d.id for d in res] == ["AD_canned"]),
        Call("agent_dispatch.get_dispatch", lambda lk: lk.agent_dispatch.get_dispatch("AD_canned", "r"),
             f"{A}/ListDispatch", agent_dispatch.ListAgentDispatchRequest(dispatch_id="AD_canned", room="r"),
             admin("r"), check_result=lambda res: res.id == "AD_canned"),
    ]
    # RoomService (live-tested elsewhere; the wire is checked here too)
    r_create = room.CreateRoomRequest(name="r", empty_timeout=60, max_participants=5, metadata="m")
    out += [
        Call("room.create_room", lambda lk: lk.room.create_room(fresh(r_create)), f"{R}/CreateRoom", r_create, CREATE),
        Call("room.list_rooms", lambda lk: lk.room.list_rooms(room.ListRoomsRequest(names=["r"])),
             f"{R}/ListRooms", room.ListRoomsRequest(names=["r"]), LIST),
        Call("room.delete_room", lambda lk: lk.room.delete_room(room.DeleteRoomRequest(room="r")),
             f"{R}/DeleteRoom", room.DeleteRoomRequest(room="r"), CREATE),
        Call("room.update_room_metadata",
             lambda lk: lk.room.update_room_metadata(room.UpdateRoomMetadataRequest(room="r", metadata="m")),
             f"{R}/UpdateRoomMetadata", room.UpdateRoomMetadataRequest(room="r", metadata="m"), admin("r")),
        Call("room.list_participants", lambda lk: lk.room.list_participants(room.ListParticipantsRequest(room="r")),
             f"{R}/ListParticipants", room.ListParticipantsRequest(room="r"), admin("r")),
        Call("room.get_participant",
             lambda lk: lk.room.get_participant(room.RoomParticipantIdentity(room="r", identity="a")),
             f"{R}/GetParticipant", room.RoomParticipantIdentity(room="r", identity="a"), admin("r")),
        Call("room.remove_participant",
             lambda lk: lk.room.remove_participant(room.RoomParticipantIdentity(room="r", identity="a")),
             f"{R}/RemoveParticipant", room.RoomParticipantIdentity(room="r", identity="a"), admin("r")),
        Call("room.forward_participant",
             lambda lk: lk.room.forward_participant(room.ForwardParticipantRequest(
                 room="r", identity="a", destination_room="d")),
             f"{R}/ForwardParticipant", room.ForwardParticipantRequest(room="r", identity="a", destination_room="d"),
             admin("r", "d")),
        Call("room.move_participant",
             lambda lk: lk.room.move_participant(room.MoveParticipantRequest(room="r", identity="a", destination_room="d")),
             f"{R}/MoveParticipant", room.MoveParticipantRequest(room="r", identity="a", destination_room="d"),
             admin("r", "d")),
        Call("room.mute_published_track",
             lambda lk: lk.room.mute_published_track(room.MuteRoomTrackRequest(room="r", identity="a", track_sid="TR_x", muted=True)),
             f"{R}/MutePublishedTrack", room.MuteRoomTrackRequest(room="r", identity="a", track_sid="TR_x", muted=True),
             admin("r")),
        Call("room.update_participant",
             lambda lk: lk.room.update_participant(room.UpdateParticipantRequest(room="r", identity="a", name="n")),
             f"{R}/UpdateParticipant", room.UpdateParticipantRequest(room="r", identity="a", name="n"), admin("r")),
        Call("room.update_subscriptions",
             lambda lk: lk.room.update_subscriptions(room.UpdateSubscriptionsRequest(
                 room="r", identity="a", track_sids=["TR_x"], subscribe=True)),
             f"{R}/UpdateSubscriptions",
             room.UpdateSubscriptionsRequest(room="r", identity="a", track_sids=["TR_x"], subscribe=True), admin("r")),
        Call("room.send_data",
             lambda lk: lk.room.send_data(room.SendDataRequest(room="r", data=b"hi", topic="t",
                                                               destination_identities=["a"])),
             f"{R}/SendData", room.SendDataRequest(room="r", data=b"hi", topic="t", destination_identities=["a"]),
             admin("r")),
        Call("room.perform_rpc",
             lambda lk: lk.room.perform_rpc(room.PerformRpcRequest(room="r", destination_identity="a", method="m",
                                                                   payload="p")),
             f"{R}/PerformRpc", room.PerformRpcRequest(room="r", destination_identity="a", method="m", payload="p"),
             admin("r"), in_official=False),
    ]
    return out


CALLS = calls()
DEPRECATED = {  # the official deprecated aliases: name -> (call, the Call it must equal)
    "sip.create_sip_inbound_trunk": (lambda lk: lk.sip.create_sip_inbound_trunk(
        sip.CreateSIPInboundTrunkRequest(trunk=TRUNK_IN)), "sip.create_inbound_trunk"),
    "sip.update_sip_inbound_trunk": (lambda lk: lk.sip.update_sip_inbound_trunk("ST_in", TRUNK_IN),
                                     "sip.update_inbound_trunk"),
    "sip.update_sip_inbound_trunk_fields": (lambda lk: lk.sip.update_sip_inbound_trunk_fields(
        "ST_in", numbers=["+9"], name="x"), None),
    "sip.create_sip_outbound_trunk": (lambda lk: lk.sip.create_sip_outbound_trunk(
        sip.CreateSIPOutboundTrunkRequest(trunk=TRUNK_OUT)), "sip.create_outbound_trunk"),
    "sip.update_sip_outbound_trunk": (lambda lk: lk.sip.update_sip_outbound_trunk("ST_out", TRUNK_OUT),
                                      "sip.update_outbound_trunk"),
    "sip.update_sip_outbound_trunk_fields": (lambda lk: lk.sip.update_sip_outbound_trunk_fields(
        "ST_out", address="a", numbers=["+9"]), None),
    "sip.list_sip_inbound_trunk": (lambda lk: lk.sip.list_sip_inbound_trunk(
        sip.ListSIPInboundTrunkRequest(trunk_ids=["ST_in"], numbers=["+1"])), "sip.list_inbound_trunk"),
    "sip.list_sip_outbound_trunk": (lambda lk: lk.sip.list_sip_outbound_trunk(
        sip.ListSIPOutboundTrunkRequest(trunk_ids=["ST_out"])), "sip.list_outbound_trunk"),
    "sip.delete_sip_trunk": (lambda lk: lk.sip.delete_sip_trunk(sip.DeleteSIPTrunkRequest(sip_trunk_id="ST_x")),
                             "sip.delete_trunk"),
    "sip.create_sip_dispatch_rule": (lambda lk: lk.sip.create_sip_dispatch_rule(
        sip.CreateSIPDispatchRuleRequest(dispatch_rule=RULE_INFO)), "sip.create_dispatch_rule"),
    "sip.update_sip_dispatch_rule": (lambda lk: lk.sip.update_sip_dispatch_rule("SDR_x", RULE_INFO),
                                     "sip.update_dispatch_rule"),
    "sip.update_sip_dispatch_rule_fields": (lambda lk: lk.sip.update_sip_dispatch_rule_fields(
        "SDR_x", trunk_ids=["ST_1", "ST_2"], rule=RULE, name="r2", attributes={"a": "b"}),
        "sip.update_dispatch_rule_fields"),
    "sip.list_sip_dispatch_rule": (lambda lk: lk.sip.list_sip_dispatch_rule(
        sip.ListSIPDispatchRuleRequest(dispatch_rule_ids=["SDR_x"])), "sip.list_dispatch_rule"),
    "sip.delete_sip_dispatch_rule": (lambda lk: lk.sip.delete_sip_dispatch_rule(
        sip.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id="SDR_x")), "sip.delete_dispatch_rule"),
}


def token_payload(captured: Captured) -> dict[str, Any]:
    auth = captured.headers["Authorization"]
    assert auth.startswith("Bearer ")
    return hs256.decode_unverified(auth[len("Bearer "):])


def grant_claims(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in ("sub", "iss", "nbf", "exp")}


def body_of(captured: Captured, rpc: str) -> Message:
    svc, method = rpc.split("/")
    request_cls, _ = RPC_TYPES[(svc, method)]
    msg = request_cls.FromString(captured.body)
    return msg


async def run(lk: Any, call: Callable[[Any], Awaitable[Any]]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return await call(lk)


@pytest.mark.parametrize("c", CALLS, ids=[c.name for c in CALLS])
async def test_request_on_the_wire(capture: CaptureServer, c: Call) -> None:
    async with api.LiveKitAPI(capture.url, KEY, SECRET) as lk:
        result = await run(lk, c.call)
    ours = capture.take()

    assert ours.method == "POST"
    assert ours.path == f"/twirp/livekit.{c.rpc}"
    assert ours.headers["Content-Type"] == "application/protobuf"
    assert uuid.UUID(ours.headers["X-Livekit-Request-Id"])
    assert ours.headers["User-Agent"].startswith("lkserver-api-python/")

    body = body_of(ours, c.rpc)
    if c.rpc == "RoomService/SendData":
        assert len(body.nonce) == 16  # a fresh random nonce per call
        body.ClearField("nonce")
    assert body == c.request, f"{body} != {c.request}"

    # a short-lived token for this call only, with exactly the grant the RPC needs
    token = ours.headers["Authorization"].removeprefix("Bearer ")
    payload = token_payload(ours)
    assert grant_claims(payload) == c.grant
    assert payload["sub"] == "" and payload["iss"] == KEY
    assert payload["exp"] - payload["nbf"] == 600
    api.TokenVerifier(KEY, SECRET).verify(token)
    official.TokenVerifier(KEY, SECRET).verify(token)

    # the response was decoded into the RPC's response type
    _, response_cls = RPC_TYPES[tuple(c.rpc.split("/"))]  # type: ignore[index]
    if c.check_result is not None:
        assert c.check_result(result)
    elif c.rpc in ("RoomService/ForwardParticipant", "RoomService/MoveParticipant"):
        assert result is None  # as the official: nothing is returned
    else:
        assert isinstance(result, response_cls)
        assert result == canned(response_cls, c.rpc.split("/")[1])

    if not c.in_official:
        return
    # the official SDK sends the same request with the same grant
    async with official.LiveKitAPI(capture.url, KEY, SECRET) as their_lk:
        await run(their_lk, c.call)
    theirs = capture.take()
    assert theirs.path == ours.path
    assert theirs.headers["Content-Type"] == ours.headers["Content-Type"]
    their_body = body_of(theirs, c.rpc)
    if c.rpc == "RoomService/SendData":
        their_body.ClearField("nonce")
    assert their_body == body
    assert grant_claims(token_payload(theirs)) == grant_claims(payload)


def test_every_rpc_has_a_method() -> None:
    """All 14 + 10 + 4 + 16 + 3 RPCs are reachable through a client method."""
    called = {tuple(c.rpc.split("/")) for c in CALLS}
    assert called == set(RPC_TYPES)
    counts = {svc: sum(1 for s, _ in RPC_TYPES if s == svc) for svc in SERVICES}
    assert counts == {"RoomService": 14, "Egress": 10, "Ingress": 4, "SIP": 16, "AgentDispatchService": 3}


@pytest.mark.parametrize("name", list(DEPRECATED))
async def test_deprecated_aliases(capture: CaptureServer, name: str) -> None:
    call, same_as = DEPRECATED[name]
    async with api.LiveKitAPI(capture.url, KEY, SECRET) as lk:
        with pytest.warns(DeprecationWarning, match="is deprecated, use"):
            await call(lk)
        ours = capture.take()
        async with official.LiveKitAPI(capture.url, KEY, SECRET) as their_lk:
            await run(their_lk, call)
        theirs = capture.take()
        assert ours.path == theirs.path and ours.body == theirs.body
        assert grant_claims(token_payload(ours)) == grant_claims(token_payload(theirs))
        if same_as is not None:
            expected = next(c for c in CALLS if c.name == same_as)
            await run(lk, expected.call)
            assert capture.take().body == ours.body


def test_method_signatures_match_official() -> None:
    import inspect

    pairs = [(api.RoomService, official.room_service.RoomService),
             (api.EgressService, official.egress_service.EgressService),
             (api.IngressService, official.ingress_service.IngressService),
             (api.SipService, official.sip_service.SipService),
             (api.AgentDispatchService, official.agent_dispatch_service.AgentDispatchService),
             (api.AccessToken, official.AccessToken), (api.TokenVerifier, official.TokenVerifier),
             (api.WebhookReceiver, official.WebhookReceiver)]
    for ours, theirs in pairs:
        names = {n for n in dir(theirs) if not n.startswith("_") or n == "__init__"}
        for name in names:
            assert hasattr(ours, name), f"{ours.__name__}.{name} is missing"
            if not callable(getattr(theirs, name)) or isinstance(getattr(theirs, name), type):
                continue
            sig = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(theirs, name)).parameters.values()]
            our_sig = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(ours, name)).parameters.values()]
            assert our_sig == sig, f"{ours.__name__}.{name}: {our_sig} != {sig}"
    ours_init = inspect.signature(api.LiveKitAPI.__init__).parameters
    theirs_init = inspect.signature(official.LiveKitAPI.__init__).parameters
    assert list(ours_init) == list(theirs_init)
    assert ours_init["timeout"].default.total == 60  # the documented default (60 s)


def test_dial_timeouts_match_official() -> None:
    cases = [(None, None), (5.0, None), (100.0, None), (None, 10), (5.0, 10), (60.0, 45)]
    for user, ring in cases:
        for cls in (sip.CreateSIPParticipantRequest, sip.TransferSIPParticipantRequest):
            req = cls()
            if ring is not None:
                req.ringing_timeout.seconds = ring
            assert sip_service.dial_timeout(user, req) == official_dial.dial_timeout(user, req)
            mine, theirs = cls(), cls()
            mine.CopyFrom(req)
            theirs.CopyFrom(req)
            sip_service.pin_ringing_timeout(mine)
            official_dial.pin_ringing_timeout(theirs)
            assert mine == theirs


# --- errors


TWIRP_ERROR = b'{"code":"not_found","msg":"egress does not exist","meta":{"argument":"egress_id"}}'


async def test_twirp_errors(capture: CaptureServer) -> None:
    async with api.LiveKitAPI(capture.url, KEY, SECRET) as lk:
        # Twirp JSON, whatever the content type
        for ctype in ("application/json", "text/plain", "application/json; charset=utf-8"):
            capture.error = (404, TWIRP_ERROR, ctype)
            with pytest.raises(api.ServerError) as e:
                await lk.egress.list_egress(egress.ListEgressRequest(egress_id="EG_x"))
            assert (e.value.code, e.value.message, e.value.status) == ("not_found", "egress does not exist", 404)
            assert e.value.metadata == {"argument": "egress_id"}
            assert e.value.code == api.ServerErrorCode.NOT_FOUND
            assert isinstance(e.value, api.TwirpError)
            assert str(e.value) == ("ServerError(code=not_found, message=egress does not exist, status=404, "
                                    "metadata={'argument': 'egress_id'})")
        # not Twirp: the status decides the code (Twirp spec), the text is the message
        for status, body, code in [
            (401, b"invalid authorization token: Signature verification failed", "unauthenticated"),
            (503, b"<html>Service Unavailable</html>", "unavailable"),
            (403, b"", "permission_denied"),
            (500, b"oops", "unknown"),
        ]:
            capture.error = (status, body, "text/plain")
            with pytest.raises(api.ServerError) as e:
                await lk.ingress.list_ingress(ingress.ListIngressRequest())
            assert (e.value.code, e.value.status, e.value.message) == (code, status, body.decode())
            assert e.value.metadata["http_error_from_intermediary"] == "true"
        capture.requests.clear()


async def test_sip_call_errors(capture: CaptureServer) -> None:
    busy = (b'{"code":"unavailable","msg":"sip call failed","meta":{"sip_status_code":"486",'
            b'"sip_status":"Busy Here","call_id":"SCL_x"}}')
    async with api.LiveKitAPI(capture.url, KEY, SECRET) as lk:
        capture.error = (503, busy, "application/json")
        with pytest.raises(api.SipCallError) as e:
            await lk.sip.create_sip_participant(sip.CreateSIPParticipantRequest(sip_call_to="+1", room_name="r"))
        assert (e.value.sip_status_code, e.value.sip_status, e.value.code) == (486, "Busy Here", "unavailable")
        assert str(e.value) == "SIP call failed: 486 Busy Here (unavailable) [call_id=SCL_x]"
        xfer = b'{"code":"failed_precondition","msg":"x","meta":{"sip_transfer_reason":"STR_RINGING_TIMEOUT"}}'
        capture.error = (412, xfer, "application/json")
        with pytest.raises(api.SipCallError) as e:
            await lk.sip.transfer_sip_participant(sip.TransferSIPParticipantRequest(
                room_name="r", participant_identity="p", transfer_to="tel:+1"))
        assert e.value.sip_transfer_reason == "STR_RINGING_TIMEOUT"
        assert str(e.value).startswith("SIP transfer failed: STR_RINGING_TIMEOUT")
        # the same metadata on a trunk call is a plain ServerError (only dialing is a SIP call)
        capture.error = (503, busy, "application/json")
        with pytest.raises(api.ServerError) as e:
            await lk.sip.list_inbound_trunk(sip.ListSIPInboundTrunkRequest())
        assert type(e.value) is api.ServerError
        capture.error = (401, b'{"code":"unauthenticated","msg":"permissions denied"}', "application/json")
        with pytest.raises(api.ServerError) as e:
            await lk.sip.create_sip_participant(sip.CreateSIPParticipantRequest(sip_call_to="+1", room_name="r"))
        assert type(e.value) is api.ServerError and e.value.message == "permissions denied"
    capture.requests.clear()


# --- LiveKitAPI


async def test_pre_signed_token_is_sent_verbatim(capture: CaptureServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEKIT_TOKEN", raising=False)
    pre = api.AccessToken(KEY, SECRET).with_grants(api.VideoGrants(room_list=True)).to_jwt()
    for lk in (api.LiveKitAPI(capture.url, token=pre), api.LiveKitAPI.with_token(pre, capture.url)):
        async with lk:
            await lk.room.list_rooms(room.ListRoomsRequest())
            await lk.egress.list_egress(egress.ListEgressRequest())
            await lk.ingress.list_ingress(ingress.ListIngressRequest())
            await lk.sip.list_inbound_trunk(sip.ListSIPInboundTrunkRequest())
            await lk.agent_dispatch.list_dispatch("r")
        assert [r.headers["Authorization"] for r in capture.requests] == [f"Bearer {pre}"] * 5
        capture.requests.clear()
    monkeypatch.setenv("LIVEKIT_TOKEN", pre)
    async with api.LiveKitAPI(capture.url) as lk:
        await lk.room.list_rooms(room.ListRoomsRequest())
    assert capture.take().headers["Authorization"] == f"Bearer {pre}"
    # explicit keys win over an ambient LIVEKIT_TOKEN
    async with api.LiveKitAPI(capture.url, KEY, SECRET) as lk:
        await lk.room.list_rooms(room.ListRoomsRequest())
    assert capture.take().headers["Authorization"] != f"Bearer {pre}"


async def test_environment_and_required_settings(capture: CaptureServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "LIVEKIT_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="url must be set"):
        api.LiveKitAPI(api_key=KEY, api_secret=SECRET)
    with pytest.raises(ValueError, match="api_key and api_secret must be set"):
        api.LiveKitAPI(capture.url)
    with pytest.raises(ValueError, match="api_key and api_secret must be set"):
        api.LiveKitAPI(capture.url, KEY)
    monkeypatch.setenv("LIVEKIT_URL", capture.url.replace("http://", "ws://"))  # ws:// becomes http://
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    async with api.LiveKitAPI() as lk:
        assert lk._session.timeout.total == 60
        await lk.sip.list_outbound_trunk(sip.ListSIPOutboundTrunkRequest())
    assert capture.take().path == "/twirp/livekit.SIP/ListSIPOutboundTrunk"
    # a base path (a reverse proxy's prefix) is kept
    async with api.LiveKitAPI(capture.url + "/lk/", KEY, SECRET) as lk:
        await lk.ingress.list_ingress(ingress.ListIngressRequest())
    assert capture.take().path == "/lk/twirp/livekit.Ingress/ListIngress"


async def test_session_ownership_and_timeout(capture: CaptureServer) -> None:
    lk = api.LiveKitAPI(capture.url, KEY, SECRET, timeout=aiohttp.ClientTimeout(total=3))
    assert lk._session.timeout.total == 3
    await lk.aclose()
    assert lk._session.closed
    async with api.LiveKitAPI(capture.url, KEY, SECRET) as lk:
        session = lk._session
    assert session.closed
    async with aiohttp.ClientSession() as own:
        async with api.LiveKitAPI(capture.url, KEY, SECRET, session=own) as lk:
            await lk.egress.list_egress(egress.ListEgressRequest())
        assert not own.closed  # a session passed in is the caller's to close
    capture.take()


async def test_services_share_one_session_concurrently(capture: CaptureServer) -> None:
    async with api.LiveKitAPI(capture.url, KEY, SECRET) as lk:
        results = await asyncio.gather(*(c.call(lk) for c in CALLS if not c.deprecated))
    assert len(results) == len([c for c in CALLS if not c.deprecated])
    ids = {r.headers["X-Livekit-Request-Id"] for r in capture.requests}
    assert len(ids) == len(capture.requests)  # one idempotency key per request
    capture.requests.clear()


def test_call_token_lifetime() -> None:
    from lkserver.api._service import CALL_TOKEN_TTL

    assert CALL_TOKEN_TTL == datetime.timedelta(minutes=10)


LIVE_SERVICES = ("SIP/", "AgentDispatchService/", "Ingress/", "Egress/")


@pytest.mark.parametrize("c", [c for c in CALLS if c.rpc.startswith(LIVE_SERVICES)],
                         ids=[c.name for c in CALLS if c.rpc.startswith(LIVE_SERVICES)])
async def test_sip_and_dispatch_requests_served_live(server: Any, c: Call) -> None:
    """The same SIP and AgentDispatchService requests against a real lkserver: each is routed,
    its grant accepted, and it is answered by the service itself (a result, or the service's own
    validation / not-found error for the placeholder ids above), never an auth or routing error."""
    from conftest import API_KEY, API_SECRET

    async with api.LiveKitAPI(server.url, API_KEY, API_SECRET) as lk:
        try:
            await run(lk, c.call)
        except api.ServerError as e:
            assert e.code in ("invalid_argument", "not_found", "unavailable", "internal"), (c.name, e.code, e.message)
            assert e.code != "internal" or "sip not connected" in e.message, (c.name, e.message)


async def test_egress_served_live_by_both_sdks(server: Any) -> None:
    """Egress through lkserver.api and the official livekit-api against a real server: a room
    composite (audio only, nobody publishing) starts, is listed, gets a layout, stops and
    completes with its file; each SDK decodes the same EgressInfo shapes."""
    from conftest import API_KEY, API_SECRET

    for client in (api.LiveKitAPI, official.LiveKitAPI):
        async with client(server.url, API_KEY, API_SECRET) as lk:
            await lk.room.create_room(room.CreateRoomRequest(name="sdk-egress"))
            info = await lk.egress.start_room_composite_egress(egress.RoomCompositeEgressRequest(
                room_name="sdk-egress", audio_only=True, file_outputs=[egress.EncodedFileOutput(filepath="sdk/a")]))
            assert info.egress_id.startswith("EG_") and info.status == egress.EgressStatus.EGRESS_STARTING
            assert info.file_results[0].filename == "sdk/a.ogg"
            for _ in range(100):
                listed = await lk.egress.list_egress(egress.ListEgressRequest(egress_id=info.egress_id))
                if listed.items[0].status == egress.EgressStatus.EGRESS_ACTIVE:
                    break
                await asyncio.sleep(0.05)
            assert listed.items[0].status == egress.EgressStatus.EGRESS_ACTIVE
            updated = await lk.egress.update_layout(egress.UpdateLayoutRequest(egress_id=info.egress_id,
                                                                               layout="grid-light"))
            assert updated.egress_id == info.egress_id
            stopped = await lk.egress.stop_egress(egress.StopEgressRequest(egress_id=info.egress_id))
            assert stopped.status == egress.EgressStatus.EGRESS_ENDING
            for _ in range(200):
                done = (await lk.egress.list_egress(egress.ListEgressRequest(egress_id=info.egress_id))).items[0]
                if done.status == egress.EgressStatus.EGRESS_COMPLETE:
                    break
                await asyncio.sleep(0.05)
            assert done.status == egress.EgressStatus.EGRESS_COMPLETE and done.file_results[0].size > 0
            await lk.room.delete_room(room.DeleteRoomRequest(room="sdk-egress"))
