"""The SIP bridge: phone calls as room participants of kind SIP.

What livekit/sip does as a separate service (reference media-services.md §3), inside lkserver:
an inbound INVITE is matched to an inbound trunk (called number, caller, source address),
challenged for digest credentials when the trunk has them, dispatched by the best rule (room,
identity `sip_<number>`, attributes; a PIN rule answers and collects DTMF digits up to `#`),
and joins the room as a LocalParticipant. CreateSIPParticipant dials out through an outbound
trunk; TransferSIPParticipant sends a REFER and follows its NOTIFYs. Audio: call RTP (G.711 or
Opus) is decoded, resampled to 48 kHz and published as an Opus track; the room's audio tracks
are decoded, mixed every 20 ms and sent to the call in its codec. DTMF travels as RFC 4733
events on the call and SipDTMF data packets in the room.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from livekit.protocol import models as pm
from livekit.protocol import room as proto_room
from livekit.protocol import sip as proto

from .. import ids
from ..config import SIPSettings
from ..logs import get_logger
from ..rooms import RoomManager
from ..store import Store
from ..store.base import NS_SIP_DISPATCH_RULE, NS_SIP_INBOUND_TRUNK
from ..twirp.errors import TwirpError
from . import media, rules, sdp
from .digest import DigestServer
from .message import Address, SipParseError, SipURI
from .ua import CallFailed, Dialog, InboundInvite, Peer, UserAgent

if TYPE_CHECKING:
    from ..rtc.service import RtcService

log = get_logger("lkserver.sip")

MIX_QUEUE = 10  # 20 ms frames buffered per room track before the oldest is dropped (200 ms)

# SIP status -> Twirp code of the error a failed call answers (protocol livekit/sip.go)
SIP_TO_TWIRP = {400: "invalid_argument", 401: "permission_denied", 403: "permission_denied",
                404: "not_found", 407: "unauthenticated", 408: "deadline_exceeded",
                480: "resource_exhausted", 486: "resource_exhausted", 487: "aborted",
                488: "invalid_argument", 500: "failed_precondition", 503: "failed_precondition",
                603: "permission_denied"}


def sip_error(status: int, reason: str) -> TwirpError:
    code = SIP_TO_TWIRP.get(status) or ("invalid_argument" if status < 500 or status >= 600
                                        else "failed_precondition")
    return TwirpError(code, f"twirp error unknown: sip status {status}: {reason}",
                      {"sip_status_code": str(status), "sip_status": reason})


class SipParticipantMixin:
    """Tells the call when the room closes or removes the participant."""

    on_closed: Any = None

    def close(self, reason: int, send_leave: bool = True) -> None:  # type: ignore[override]
        super().close(reason, send_leave)  # type: ignore[misc]
        cb, self.on_closed = self.on_closed, None
        if cb is not None:
            cb(reason)


class Call:
    """One bridged call: its dialog, RTP endpoint, room participant and audio both ways."""

    def __init__(self, bridge: SipBridge, call_id: str, codec: sdp.Codec, dtmf_pt: int | None,
                 endpoint: media.RtpEndpoint) -> None:
        self.bridge = bridge
        self.call_id = call_id
        self.codec = codec
        self.dtmf_pt = dtmf_pt
        self.endpoint = endpoint
        endpoint.on_packet = self._on_rtp
        self.dialog: Dialog | None = None
        self.participant: Any = None
        self.track: Any = None
        self.alaw = codec.name == "PCMA"
        self.opus_in = media.OpusDecoder() if codec.name == "opus" else None
        self.opus_out = media.OpusEncoder() if codec.name == "opus" else None
        self.room_encoder = media.OpusEncoder()
        self.room_sender: media.RtpSender | None = None
        self.call_sender = media.RtpSender(codec.pt, codec.rate)
        self.decoders: dict[str, media.OpusDecoder] = {}
        self.frames: dict[str, collections.deque] = {}
        self.dtmf = media.DtmfReceiver(self._on_dtmf_digit)
        self.digits: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self.collect_digits = False
        self.last_rtp = time.monotonic()
        self.ended = asyncio.Event()
        self._mixer: asyncio.Task | None = None
        self.started_at = time.time()

    # -- call -> room ----------------------------------------------------------------------------

    def _on_rtp(self, packet: bytes) -> None:
        parsed = media.parse_rtp(packet)
        if parsed is None:
            return
        pt, _marker, _seq, ts, _ssrc, payload = parsed
        self.last_rtp = time.monotonic()
        if self.dtmf_pt is not None and pt == self.dtmf_pt:
            self.dtmf.feed(ts, payload)
            return
        if pt != self.codec.pt or self.track is None:
            return
        if self.opus_in is not None:
            pcm48 = self.opus_in.decode(payload)
        else:
            pcm48 = media.upsample6(media.g711_decode(payload, self.alaw))
        if len(pcm48) == 0:
            return
        for i in range(0, len(pcm48) - 959, 960):
            for out in self.room_encoder.encode(pcm48[i:i + 960]):
                assert self.room_sender is not None
                self.track.write_rtp(self.room_sender.packet(out))

    def _on_dtmf_digit(self, digit: str) -> None:
        if self.collect_digits:
            try:
                self.digits.put_nowait(digit)
            except asyncio.QueueFull:
                pass
        if self.participant is not None:
            code = media.DTMF_EVENTS.index(digit)
            packet = pm.DataPacket(kind=pm.DataPacket.Kind.RELIABLE,
                                   participant_identity=self.participant.identity,
                                   sip_dtmf=pm.SipDTMF(code=code, digit=digit))
            self.bridge.rtc.route_data(self.participant, packet)

    # -- room -> call ----------------------------------------------------------------------------

    def _subscribe(self, track: Any) -> None:
        info = getattr(track, "info", None)
        if info is None or info.type != pm.TrackType.AUDIO or track.sid in self.frames:
            return
        self.frames[track.sid] = collections.deque(maxlen=MIX_QUEUE)
        self.decoders[track.sid] = media.OpusDecoder()
        try:
            self.participant.subscribe(track.sid, lambda pkt, sid=track.sid: self._on_room_rtp(sid, pkt))
        except KeyError:
            self.frames.pop(track.sid, None)

    def _unsubscribe(self, track: Any) -> None:
        self.frames.pop(track.sid, None)
        self.decoders.pop(track.sid, None)

    def _on_room_rtp(self, sid: str, packet: bytes) -> None:
        parsed = media.parse_rtp(packet)
        q, dec = self.frames.get(sid), self.decoders.get(sid)
        if parsed is None or q is None or dec is None:
            return
        pcm48 = dec.decode(parsed[5])
        for i in range(0, len(pcm48) - 959, 960):
            q.append(pcm48[i:i + 960])

    async def _mix_forever(self) -> None:
        """Every 20 ms: one frame from each room track, summed, encoded, sent to the call."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        timeout = self.bridge.settings.media_timeout
        while not self.ended.is_set():
            next_at += media.FRAME_MS / 1000
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                next_at = loop.time()  # fell far behind: do not burst
            parts = [q.popleft() for q in self.frames.values() if q]
            if parts:
                mixed = np.clip(np.sum([p.astype(np.int32) for p in parts], axis=0), -32768, 32767).astype(np.int16)
            else:
                mixed = np.zeros(960, dtype=np.int16)
            if self.opus_out is not None:
                for out in self.opus_out.encode(mixed):
                    self.endpoint.send(self.call_sender.packet(out))
            else:
                self.endpoint.send(self.call_sender.packet(media.g711_encode(media.downsample6(mixed), self.alaw)))
            if timeout and time.monotonic() - self.last_rtp > timeout:
                log.info("sip_media_timeout", call_id=self.call_id)
                self.bridge.spawn(self.hangup("media timeout"))
                return

    def send_dtmf(self, digits: str) -> None:
        if self.dtmf_pt is None:
            return
        self.bridge.spawn(self._send_dtmf(digits))

    async def _send_dtmf(self, digits: str) -> None:
        for d in digits:
            if d.lower() == "w":
                await asyncio.sleep(0.5)
                continue
            if d.upper() not in media.DTMF_EVENTS:
                continue
            assert self.dtmf_pt is not None
            for pkt in media.dtmf_packets(self.call_sender, d, self.dtmf_pt):
                self.endpoint.send(pkt)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)

    # -- lifecycle -------------------------------------------------------------------------------

    async def join_room(self, room: str, identity: str, name: str, metadata: str, attributes: dict[str, str],
                        create: proto_room.CreateRoomRequest | None = None) -> None:
        from ..rtc.local import LocalParticipant
        from ..rtc.negotiation import TrackCodec

        cls = type("SipParticipant", (SipParticipantMixin, LocalParticipant), {})
        if create is not None and self.bridge.rooms.get_room(room) is None:
            await self.bridge.rooms.create_room(create)
        p = await cls.join(self.bridge.rtc, room, identity, name=name, metadata=metadata,
                           kind=pm.ParticipantInfo.Kind.SIP, attributes=attributes)
        self.participant = p
        p.on_closed = self._on_participant_closed
        p.on_track_published = self._subscribe
        p.on_track_unpublished = self._unsubscribe
        p.on_data = self._on_room_data
        self.track = p.publish_track(TrackCodec("audio/opus", 48000, 2), pm.TrackSource.MICROPHONE, "phone")
        self.room_sender = media.RtpSender(self.track.pt, 48000)
        self.room_sender.ssrc = self.track.ssrc
        for t in p.remote_tracks():
            self._subscribe(t)

    def start_media(self) -> None:
        self.last_rtp = time.monotonic()
        if self._mixer is None:
            self._mixer = self.bridge.spawn(self._mix_forever())

    def _on_room_data(self, packet: pm.DataPacket) -> None:
        if packet.HasField("sip_dtmf"):
            d = packet.sip_dtmf.digit or (media.DTMF_EVENTS[packet.sip_dtmf.code]
                                          if packet.sip_dtmf.code < len(media.DTMF_EVENTS) else "")
            if d:
                self.send_dtmf(d)

    def _on_participant_closed(self, reason: int) -> None:
        self.participant = None
        self.bridge.spawn(self.hangup(f"participant closed ({pm.DisconnectReason.Name(reason)})"))

    def set_status(self, status: str) -> None:
        p = self.participant
        if p is not None:
            self.bridge.spawn(self.bridge.rooms.update_participant(
                p.room.name, p.identity, attributes={rules.ATTR_CALL_STATUS: status}))

    async def hangup(self, why: str = "") -> None:
        """End the call everywhere: BYE to the far end, the participant leaves, media stops."""
        if self.ended.is_set():
            return
        self.ended.set()
        self.bridge.calls.pop(self.call_id, None)
        log.info("sip_call_ended", call_id=self.call_id, reason=why,
                 seconds=round(time.time() - self.started_at, 1), rtp_in=self.endpoint.received)
        if self.dialog is not None:
            await self.dialog.bye()
        p, self.participant = self.participant, None
        if p is not None:
            p.on_closed = None
            await p.leave(pm.DisconnectReason.CLIENT_INITIATED)
        self.endpoint.close()
        if self._mixer is not None and self._mixer is not asyncio.current_task():
            self._mixer.cancel()

    def on_remote_bye(self) -> None:
        if self.dialog is not None:
            self.dialog.ended = True
        self.bridge.spawn(self.hangup("remote hangup"))


class SipBridge:
    def __init__(self, settings: SIPSettings, store: Store, rooms: RoomManager, rtc: RtcService,
                 bind_hosts: list[str] | None = None, node_ip: str = "") -> None:
        self.settings = settings
        self.store = store
        self.rooms = rooms
        self.rtc = rtc
        host = settings.bind or ((bind_hosts or ["0.0.0.0"])[0])
        self.host = host
        adv = settings.node_ip or node_ip or ("127.0.0.1" if host in ("0.0.0.0", "") else host)
        self.advertise = adv
        self.ua: UserAgent | None = None
        self.port = 0
        self.calls: dict[str, Call] = {}
        self.digest = DigestServer("lkserver")
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        if not self.settings.enabled:
            return
        self.ua = UserAgent(self.host, self.advertise, self._on_invite)
        self.port = await self.ua.listen(self.settings.port)
        log.info("sip_listening", host=self.host, port=self.port, advertise=self.advertise)

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            await call.hangup("server stopping")
        for t in list(self._tasks):
            t.cancel()
        if self.ua is not None:
            await self.ua.close()

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sip_task_failed", error=repr(task.exception()))

    async def _open_rtp(self) -> media.RtpEndpoint:
        s = self.settings
        return await media.RtpEndpoint.open(self.host, s.rtp_port_start, s.rtp_port_end, lambda pkt: None)

    # -- inbound -----------------------------------------------------------------------------------

    async def _on_invite(self, inv: InboundInvite) -> None:
        req = inv.req
        try:
            frm = SipURI.parse(Address.parse(req.get("From")).uri)
            to = SipURI.parse(Address.parse(req.get("To")).uri)
        except SipParseError:
            inv.respond(400)
            return
        call = rules.CallInfo(from_user=frm.user, to_user=to.user or SipURI.parse(req.uri).user,
                              from_host=frm.host, source_ip=inv.peer.host)
        trunks = await self.store.list_messages(NS_SIP_INBOUND_TRUNK, proto.SIPInboundTrunkInfo)
        try:
            trunk = rules.match_trunk(trunks, call)
        except rules.SipRuleError as e:
            log.warning("sip_inbound_refused", call_id=call.call_id, reason=e.msg)
            inv.respond(486, "Flood")
            return
        if trunk is None:
            log.warning("sip_inbound_refused", call_id=call.call_id, to=call.to_user, from_=call.from_user,
                        reason="no trunk")
            inv.respond(404, "No trunk found")
            return
        if trunk.auth_username or trunk.auth_password:
            realm = trunk.auth_realm or self.digest.realm
            auth = req.get("Authorization")
            if not auth:
                inv.respond(401, headers=[("WWW-Authenticate", self.digest.challenge(realm))])
                return
            if not self.digest.verify(auth, "INVITE", trunk.auth_username, trunk.auth_password, realm):
                log.warning("sip_inbound_refused", call_id=call.call_id, trunk=trunk.sip_trunk_id,
                            reason="invalid credentials")
                inv.respond(403, "Invalid credentials were provided")
                return
        rule_list = await self.store.list_messages(NS_SIP_DISPATCH_RULE, proto.SIPDispatchRuleInfo)
        try:
            rule = rules.match_rule(trunk, rule_list, call)
            dispatch = rules.evaluate_rule(trunk, rule, call)
        except rules.SipRuleError as e:
            log.warning("sip_inbound_refused", call_id=call.call_id, trunk=trunk.sip_trunk_id, reason=e.msg)
            inv.respond(404 if e.code == "failed_precondition" else 403, e.msg[:100])
            return
        try:
            offer = sdp.parse(req.body)
        except (sdp.SdpError, ValueError):
            inv.respond(488)
            return
        if offer.codec is None:
            inv.respond(488)
            return
        endpoint = await self._open_rtp()
        endpoint.remote = (offer.ip, offer.port)
        c = Call(self, call.call_id, offer.codec, offer.dtmf_pt, endpoint)
        self.calls[c.call_id] = c
        answer = sdp.build(self.advertise, endpoint.port, [offer.codec], offer.dtmf_pt)
        if dispatch.request_pin:
            inv.respond(200, headers=list(dispatch.headers.items()), body=answer)
            c.dialog = inv.dialog
            assert c.dialog is not None
            c.dialog.on_bye = c.on_remote_bye
            c.dialog.local_sdp = answer  # type: ignore[attr-defined]
            c.start_media()
            dispatch = await self._collect_pin(c, trunk, rule_list, call)
            if dispatch is None:
                await c.hangup("no matching PIN")
                return
        else:
            inv.respond(180)
        try:
            await c.join_room(dispatch.room_name, dispatch.identity, dispatch.name, dispatch.metadata,
                              {**dispatch.attributes, rules.ATTR_CALL_STATUS: "active"},
                              self._create_request(dispatch))
        except Exception as e:  # noqa: BLE001 - any failure to join refuses the call, logged
            log.warning("sip_inbound_join_failed", call_id=c.call_id, room=dispatch.room_name, error=str(e))
            if not inv.final_sent:
                inv.respond(503)
                c.endpoint.close()
                self.calls.pop(c.call_id, None)
            else:
                await c.hangup("room join failed")
            return
        if not inv.final_sent:
            if inv.canceled.is_set():
                await c.hangup("caller canceled")
                return
            inv.respond(200, headers=list(dispatch.headers.items()), body=answer)
            c.dialog = inv.dialog
            assert c.dialog is not None
            c.dialog.on_bye = c.on_remote_bye
            c.dialog.local_sdp = answer  # type: ignore[attr-defined]
            c.start_media()
        log.info("sip_inbound_call", call_id=c.call_id, trunk=trunk.sip_trunk_id, rule=dispatch.rule_id,
                 room=dispatch.room_name, identity=dispatch.identity, codec=offer.codec.name)

    async def _collect_pin(self, c: Call, trunk: proto.SIPInboundTrunkInfo, rule_list: list,
                           call: rules.CallInfo) -> rules.Dispatch | None:
        """Digits up to `#` (or timeout), then the rule with that PIN (LiveKit prompts; we listen)."""
        c.collect_digits = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.pin_timeout
        for _attempt in range(3):
            pin = ""
            while not c.ended.is_set():
                try:
                    d = await asyncio.wait_for(c.digits.get(), max(0.01, deadline - loop.time()))
                except TimeoutError:
                    return None
                if d == "#":
                    break
                pin += d
            if c.ended.is_set():
                return None
            call.pin = pin
            try:
                rule = rules.match_rule(trunk, rule_list, call)
                d2 = rules.evaluate_rule(trunk, rule, call)
            except rules.SipRuleError:
                log.info("sip_wrong_pin", call_id=c.call_id)
                continue
            c.collect_digits = False
            return d2
        return None

    @staticmethod
    def _create_request(d: rules.Dispatch) -> proto_room.CreateRoomRequest:
        req = proto_room.CreateRoomRequest(name=d.room_name, room_preset=d.room_preset)
        rc = d.room_config
        if rc is not None:
            req.empty_timeout, req.departure_timeout = rc.empty_timeout, rc.departure_timeout  # type: ignore[attr-defined]
            req.max_participants, req.metadata = rc.max_participants, rc.metadata  # type: ignore[attr-defined]
            req.agents.extend(rc.agents)  # type: ignore[attr-defined]
        return req

    # -- outbound ----------------------------------------------------------------------------------

    async def create_participant(self, req: proto.CreateSIPParticipantRequest,
                                 trunk: proto.SIPOutboundTrunkInfo | None, call_id: str,
                                 timeout: float) -> proto.SIPParticipantInfo:
        if self.ua is None:
            raise TwirpError("internal", "sip not connected (sip.enabled is off)")
        if trunk is not None:
            address, transport = trunk.address, trunk.transport
            user, password = trunk.auth_username, trunk.auth_password
            numbers = list(trunk.numbers)
            headers = dict(trunk.headers)
            from_host = trunk.from_host
        else:
            t = req.trunk
            address, transport, user, password = t.hostname, t.transport, t.auth_username, t.auth_password
            numbers, headers, from_host = [], {}, t.from_host
        if transport == proto.SIPTransport.SIP_TRANSPORT_TLS:
            raise TwirpError("unimplemented", "SIP over TLS is not supported by lkserver")
        number = req.sip_number or (random.choice(numbers) if numbers else "")
        headers.update(req.headers)
        host, _, port_s = address.partition(":")
        peer = Peer(host, int(port_s) if port_s.isdigit() else 5060,
                    "tcp" if transport == proto.SIPTransport.SIP_TRANSPORT_TCP else "udp")
        to_user = req.to_user_override or req.sip_call_to
        identity = req.participant_identity or f"sip_{req.sip_call_to}"
        name = req.participant_name or f"Phone {req.sip_call_to}"
        attrs = dict(req.participant_attributes)
        attrs.update({rules.ATTR_CALL_ID: call_id, rules.ATTR_TRUNK_ID: req.sip_trunk_id,
                      rules.ATTR_CALL_STATUS: "dialing"})
        if not req.hide_phone_number:
            attrs[rules.ATTR_PHONE_NUMBER] = req.sip_call_to
            attrs[rules.ATTR_TRUNK_NUMBER] = number
        endpoint = await self._open_rtp()
        c = Call(self, call_id, sdp.PCMU, sdp.DTMF_PT, endpoint)
        self.calls[call_id] = c
        try:
            await c.join_room(req.room_name, identity, name, req.participant_metadata, attrs,
                              proto_room.CreateRoomRequest(name=req.room_name))
        except Exception as e:  # noqa: BLE001 - RoomNotFound, RoomFull, ...: the call is not placed
            endpoint.close()
            self.calls.pop(call_id, None)
            raise TwirpError("unavailable", f"cannot join room: {e}") from None
        info = proto.SIPParticipantInfo(participant_id=c.participant.sid, participant_identity=identity,
                                        room_name=req.room_name, sip_call_id=call_id)
        ringing = self.settings.ringing_timeout
        if req.HasField("ringing_timeout"):
            ringing = req.ringing_timeout.seconds + req.ringing_timeout.nanos / 1e9 or ringing
        from_display = f'"{req.display_name}" ' if req.HasField("display_name") and req.display_name else ""
        dial = self._dial(c, peer, to_user, number, from_host or self.advertise, user, password, headers,
                          ringing, req.dtmf, from_display)
        if not req.wait_until_answered:
            self.spawn(self._dial_quietly(dial))
            return info
        try:
            await asyncio.wait_for(dial, timeout)
        except TimeoutError:
            await c.hangup("dial timeout")
            raise TwirpError("deadline_exceeded", "twirp error unknown: sip call timed out",
                             {"sip_status_code": "408", "sip_status": "Request Timeout"}) from None
        except CallFailed as e:
            raise sip_error(e.status, e.reason) from None
        return info

    async def _dial_quietly(self, dial: Any) -> None:
        try:
            await dial
        except CallFailed:
            pass

    async def _dial(self, c: Call, peer: Peer, to_user: str, number: str, from_host: str, user: str,
                    password: str, headers: dict[str, str], ringing: float, dtmf: str, from_display: str) -> None:
        assert self.ua is not None
        host = f"{peer.host}:{peer.port}" if peer.port != 5060 else peer.host
        uri = f"sip:{to_user}@{host}" + (";transport=tcp" if peer.transport == "tcp" else "")
        try:
            dialog, resp = await self.ua.invite(
                request_uri=uri, from_addr=f"{from_display}<sip:{number or 'lkserver'}@{from_host}>",
                to_addr=f"<sip:{to_user}@{host}>", peer=peer,
                sdp=sdp.build(self.advertise, c.endpoint.port, [sdp.PCMU, sdp.PCMA, sdp.OPUS], sdp.DTMF_PT),
                username=user, password=password, ringing_timeout=ringing,
                extra_headers=list(headers.items()), on_ringing=lambda: c.set_status("ringing"))
        except CallFailed as e:
            log.info("sip_outbound_failed", call_id=c.call_id, status=e.status, reason=e.reason)
            await c.hangup(f"{e.status} {e.reason}")
            raise
        except asyncio.CancelledError:
            await c.hangup("canceled")
            raise
        answer = sdp.parse(resp.body) if resp.body else None
        if answer is None or answer.codec is None:
            c.dialog = dialog
            await c.hangup("no usable codec in the answer")
            raise CallFailed(488, "Not Acceptable Here")
        c.codec = answer.codec
        c.alaw = answer.codec.name == "PCMA"
        if answer.codec.name == "opus":
            c.opus_in, c.opus_out = media.OpusDecoder(), media.OpusEncoder()
        c.call_sender = media.RtpSender(answer.codec.pt, answer.codec.rate)
        c.dtmf_pt = answer.dtmf_pt
        c.endpoint.remote = (answer.ip, answer.port)
        c.dialog = dialog
        dialog.on_bye = c.on_remote_bye
        c.start_media()
        c.set_status("active")
        log.info("sip_outbound_answered", call_id=c.call_id, to=to_user, codec=answer.codec.name)
        if dtmf:
            c.send_dtmf(dtmf)

    # -- transfer ----------------------------------------------------------------------------------

    async def transfer(self, call_id: str, req: proto.TransferSIPParticipantRequest,
                       timeout: float) -> proto.TransferSIPParticipantResponse:
        c = self.calls.get(call_id)
        if c is None or c.dialog is None or c.dialog.ended:
            raise TwirpError.psrpc("not_found", "requested sip participant does not exist")
        transfer_id = ids.new_id(ids.SIP_TRANSFER)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_notify(n: Any) -> None:
            frag = n.body.decode("utf-8", "replace").strip()
            if frag.startswith("SIP/2.0 "):
                try:
                    status = int(frag.split()[1])
                except (IndexError, ValueError):
                    return
                if status >= 200 and not done.done():
                    done.set_result(status)

        c.dialog.on_notify = on_notify
        try:
            resp = await asyncio.wait_for(c.dialog.refer(req.transfer_to, list(req.headers.items())), timeout)
        except TimeoutError:
            raise sip_error(408, "Request Timeout") from None
        if resp.status >= 300:
            raise sip_error(resp.status, resp.reason)
        try:
            status = await asyncio.wait_for(done, timeout)
        except TimeoutError:
            raise sip_error(408, "Request Timeout") from None
        if status >= 300:
            raise sip_error(status, "transfer failed")
        log.info("sip_transferred", call_id=call_id, to=req.transfer_to)
        await c.hangup("transferred")
        return proto.TransferSIPParticipantResponse(transfer_id=transfer_id)
