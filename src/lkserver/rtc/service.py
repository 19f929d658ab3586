"""Realtime signalling endpoints and the room-level media plumbing.

`/rtc` (v0: publisher and subscriber transports), `/rtc/v1` (one transport, JoinRequest in the
URL) and their `validate` twins, as livekit-server serves them (pkg/service/rtcservice.go,
utils.go ValidateConnectRequest): the join is validated before the WebSocket upgrade and refused
with a plain-text HTTP error; then the first message is the JoinResponse. Room-level work —
broadcasting participant updates, auto-subscription, data routing, active speakers — lives here
because it is about what the connected clients see; membership and lifecycle stay in rooms/.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Optional

from aiohttp import WSMsgType, web
from aiortc.rtcdtlstransport import RTCCertificate
from google.protobuf.json_format import MessageToJson, Parse
from livekit.protocol import models as pm
from livekit.protocol import room as proto_room
from livekit.protocol import rtc as pr

from .. import __version__, ids
from ..auth import Claims
from ..config import Config
from ..logs import get_logger
from ..rooms import Participant, Room, RoomFull, RoomManager, RoomNotFound
from ..server.http import AuthFailed, authenticate, plain
from .dtls import fingerprint_lines
from .forward import UpTrack
from .net import MediaNetwork, local_ipv4_addresses
from .participant import JoinSettings, PublishedTrack, RtcParticipant
from .quality import (
    OFF,
    AllocationTrack,
    DynacastState,
    allocate,
    deficient,
    loss_weight,
    subscribed_quality_update,
)
from .transport import WebRtcTransport

log = get_logger("lkserver.rtc")

PROTOCOL_VERSION = 16
SERVER_VERSION = "1.9.0"
PING_INTERVAL = 5
PING_TIMEOUT = 15
# how long a participant whose signalling dropped may come back with reconnect=1
RESUME_WINDOW = 15.0
MAX_SIGNAL_MESSAGE = 1 << 20
MAX_JOIN_REQUEST = 1 << 16

KINDS = {"": pm.ParticipantInfo.Kind.STANDARD, "standard": pm.ParticipantInfo.Kind.STANDARD,
         "ingress": pm.ParticipantInfo.Kind.INGRESS, "egress": pm.ParticipantInfo.Kind.EGRESS,
         "sip": pm.ParticipantInfo.Kind.SIP, "agent": pm.ParticipantInfo.Kind.AGENT,
         "connector": pm.ParticipantInfo.Kind.CONNECTOR, "bridge": pm.ParticipantInfo.Kind.BRIDGE}

SOURCES = {"camera": pm.TrackSource.CAMERA, "microphone": pm.TrackSource.MICROPHONE,
           "screen_share": pm.TrackSource.SCREEN_SHARE,
           "screen_share_audio": pm.TrackSource.SCREEN_SHARE_AUDIO}

# active speaker detection (livekit config `audio:` defaults)
SPEAKER_ACTIVE_LEVEL = 35  # dBov; lower is louder
SPEAKER_MIN_PERCENTILE = 40
SPEAKER_INTERVAL = 0.4
PROBE_INTERVAL = 0.05
QUALITY_INTERVAL = 5.0
PROBE_DURATION = 2.0
PROBE_MIN_BPS = 200_000
HIGH_LAYER = 2
PAUSED_MIN_WAIT = 5.0  # an allocator-paused track stays paused at least this long (LiveKit)
ICE_PREFERENCE_TTL = 60.0


class JoinError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class JoinParams:
    claims: Claims
    video: dict
    room_name: str
    settings: JoinSettings
    join_request: Optional[pr.JoinRequest]
    reconnect: bool
    reconnect_sid: str
    metadata: str
    attributes: dict


def _bool(v: Optional[str]) -> bool:
    return (v or "").lower() in ("1", "true")


class SpeakerState:
    """Audio levels of one track over the current speaker interval."""

    __slots__ = ("owner", "active", "total", "linear", "level")

    def __init__(self, owner: str) -> None:
        self.owner = owner  # participant sid
        self.active = self.total = 0
        self.linear = 0.0
        self.level = 0.0


class RtcService:
    def __init__(self, config: Config, rooms: RoomManager) -> None:
        self.config = config
        self.rooms = rooms
        self.limits = config.limit
        self.certificate = RTCCertificate.generateCertificate()
        self.fingerprint_lines = fingerprint_lines(self.certificate)
        rtc = config.rtc
        # rtc.node_ip: the address advertised to clients (a comma-separated list advertises several)
        configured = [ip.strip() for ip in str(rtc.node_ip).split(",") if ip.strip()] if rtc.node_ip else []
        node_ips = configured or local_ipv4_addresses() or ["127.0.0.1"]
        self.network = MediaNetwork(node_ips=node_ips, udp_port=rtc.udp_port,
                                    port_range=(rtc.port_range_start, rtc.port_range_end),
                                    tcp_port=rtc.tcp_port)
        self.participants: dict[str, RtcParticipant] = {}  # by participant sid
        self.speakers: dict[str, dict[str, SpeakerState]] = {}  # room name -> track sid -> state
        self.speaker_levels: dict[str, dict[str, float]] = {}  # room name -> participant sid -> level
        self._tasks: list[asyncio.Task] = []
        # counters of streams that ended (live ones are summed at scrape time)
        self.retired = {"forwarded_packets": 0, "forwarded_bytes": 0, "received_packets": 0}
        # ICE candidate preference a client asked for its next session (simulate force-tcp)
        self.ice_preferences: dict[tuple[str, str], tuple[str, float]] = {}
        # (room, identity) whose next resume is refused (simulate disconnect-signal-on-resume)
        self.drop_next_resume: set[tuple[str, str]] = set()
        rooms.on_participant_update(self.enforce_permissions)
        rooms.on_participant_update(self._broadcast_participant)
        rooms.on_participant_gone(self._broadcast_gone)
        rooms.on_room_update(self._broadcast_room)
        rooms.on_subscription_update(self._api_subscriptions)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.network.start()
        self._tasks.append(asyncio.create_task(self._every(1.0, self._each_second)))
        self._tasks.append(asyncio.create_task(self._every(SPEAKER_INTERVAL, self._update_speakers)))
        self._tasks.append(asyncio.create_task(self._every(PROBE_INTERVAL, self._probe)))
        self._tasks.append(asyncio.create_task(self._every(QUALITY_INTERVAL, self._connection_quality)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for p in list(self.participants.values()):
            p.close(pm.DisconnectReason.SERVER_SHUTDOWN)
        for p in list(self.participants.values()):
            await p.teardown()
        await self.network.stop()

    async def _every(self, seconds: float, fn: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                fn()
            except Exception:
                log.exception("rtc_periodic_failed", task=fn.__name__)

    def _each_second(self) -> None:
        now = time.monotonic()
        for p in list(self.participants.values()):
            p.send_receiver_reports()
            self._refresh_layers(p, now)
            if p.closed or not p.has_signal:
                continue
            if p.ws_attached.is_set():
                if now - p.last_signal > PING_TIMEOUT:
                    log.info("signal_ping_timeout", identity=p.identity, room=p.room.name)
                    p.detach_socket()
            elif now - p.detached_at > RESUME_WINDOW:
                log.info("signal_resume_window_over", identity=p.identity, room=p.room.name)
                p.close(pm.DisconnectReason.SIGNAL_CLOSE, send_leave=False)

    def media_stats(self) -> dict[str, int]:
        out = dict(self.retired)
        for p in self.participants.values():
            for sub in p.subscriptions.values():
                if sub.down is not None:
                    out["forwarded_packets"] += sub.down.packets_sent
                    out["forwarded_bytes"] += sub.down.octets_sent
            for up in p.ups_by_ssrc.values():
                out["received_packets"] += up.packets
        return out

    def participant_stream_bytes(self, sid: str) -> Optional[dict]:
        """Bytes so far of each media stream a connected participant sends, key (True, track sid,
        ssrc), and receives, key (False, track sid, ssrc); None when it is not connected here.
        A stream keeps its key for its life, so a sampler (analytics) can sum what it saw last
        of each; this reads counters the forwarding path keeps anyway, and adds no work to it."""
        p = self.participants.get(sid)
        if p is None:
            return None
        out: dict = {(True, up.track_sid, up.ssrc): up.bytes for up in p.ups_by_ssrc.values()}
        for sub in p.subscriptions.values():
            if sub.down is not None:
                out[(False, sub.track.sid, sub.ssrc)] = sub.down.octets_sent
        return out

    def new_transport(self, name: str) -> WebRtcTransport:
        return WebRtcTransport(self.network, self.certificate, name)

    # -- HTTP ------------------------------------------------------------------------------------

    def routes(self) -> dict[str, Any]:
        return {"/rtc": self.handle_rtc_v0, "/rtc/v1": self.handle_rtc_v1,
                "/rtc/validate": self.handle_validate_v0, "/rtc/v1/validate": self.handle_validate_v1}

    async def handle_validate_v0(self, request: web.Request) -> web.StreamResponse:
        return await self._validate(request, single_pc=False)

    async def handle_validate_v1(self, request: web.Request) -> web.StreamResponse:
        return await self._validate(request, single_pc=True)

    async def _validate(self, request: web.Request, single_pc: bool) -> web.StreamResponse:
        headers = {"Access-Control-Allow-Origin": "*"}
        try:
            params = self.validate_join(request, single_pc)
            if not self.config.room.auto_create and not params.claims.video.room_create \
                    and self.rooms.get_room(params.room_name) is None:
                raise JoinError(404, "requested room does not exist")
        except JoinError as e:
            return web.Response(status=e.status, text=e.message, headers=headers)
        return web.Response(status=200, text="success", headers=headers)

    async def handle_rtc_v0(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, single_pc=False)

    async def handle_rtc_v1(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, single_pc=True)

    def validate_join(self, request: web.Request, single_pc: bool) -> JoinParams:
        """LiveKit's ValidateConnectRequest; raises JoinError(status, plain-text message)."""
        try:
            claims, payload, _ = authenticate(request, self.config.keys)
        except AuthFailed as e:
            raise JoinError(401, e.message) from None
        if claims is None or claims.video is None or payload is None:
            raise JoinError(401, "no permissions to access the room")
        video = payload.get("video") if isinstance(payload.get("video"), dict) else {}
        if not claims.video.room_join:
            raise JoinError(401, "permissions denied")
        q = request.query
        join_request: Optional[pr.JoinRequest] = None
        metadata, attributes = "", {}
        if single_pc:
            join_request = self._join_request(q.get("join_request", ""))
            metadata = join_request.metadata
            attributes = dict(join_request.participant_attributes)
        elif q.get("attributes"):
            try:
                attributes = json.loads(base64.b64decode(q["attributes"] + "=" * (-len(q["attributes"]) % 4)))
            except (ValueError, TypeError):
                attributes = {}
            if not isinstance(attributes, dict):
                attributes = {}
        if not claims.identity:
            raise JoinError(400, "identity cannot be empty")
        m = self.limits.max_participant_identity_length
        if m and len(claims.identity.encode()) > m:
            raise JoinError(400, f"participant identity length exceeds limits: max length {m}")
        room_name = claims.video.room
        if not room_name:
            raise JoinError(400, "no room name")
        m = self.limits.max_room_name_length
        if m and len(room_name.encode()) > m:
            raise JoinError(400, f"room name length exceeds limits: max length {m}")
        if (metadata or attributes) and not claims.video.can_update_own_metadata:
            raise JoinError(401, "no permissions to access the room")
        default_pause = self.config.rtc.congestion_control.allow_pause
        if join_request is not None:
            cs = join_request.connection_settings
            allow_pause = cs.subscriber_allow_pause if cs.HasField("subscriber_allow_pause") else default_pause
            settings = JoinSettings(protocol=join_request.client_info.protocol, auto_subscribe=cs.auto_subscribe,
                                    adaptive_stream=cs.adaptive_stream, single_pc=True,
                                    client_info=join_request.client_info, allow_pause=allow_pause)
            reconnect, sid = join_request.reconnect, join_request.participant_sid
        else:
            info = pm.ClientInfo(sdk=_sdk(q.get("sdk", "")), version=q.get("version", ""),
                                 os=q.get("os", ""), os_version=q.get("os_version", ""),
                                 device_model=q.get("device_model", ""), browser=q.get("browser", ""))
            try:
                info.protocol = int(q.get("protocol", "0") or 0)
            except ValueError:
                info.protocol = 0
            settings = JoinSettings(protocol=info.protocol,
                                    auto_subscribe=_bool(q.get("auto_subscribe", "1")),
                                    adaptive_stream=_bool(q.get("adaptive_stream")), single_pc=False,
                                    client_info=info, allow_pause=_bool(q["subscriber_allow_pause"])
                                    if q.get("subscriber_allow_pause") else default_pause)
            reconnect, sid = _bool(q.get("reconnect")), q.get("sid", "")
        return JoinParams(claims, video, room_name, settings, join_request, reconnect, sid, metadata, attributes)

    def _join_request(self, value: str) -> pr.JoinRequest:
        if not value:
            raise JoinError(400, "join_request is required")
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            wrapped = pr.WrappedJoinRequest.FromString(raw)
        except Exception:
            raise JoinError(400, "cannot unmarshal wrapped join request") from None
        data = wrapped.join_request
        if wrapped.compression == pr.WrappedJoinRequest.Compression.GZIP:
            try:
                with gzip.GzipFile(fileobj=__import__("io").BytesIO(data)) as f:
                    data = f.read(MAX_JOIN_REQUEST + 1)
            except (OSError, EOFError):
                raise JoinError(400, "cannot read decompressed join request") from None
        if len(data) > MAX_JOIN_REQUEST:
            raise JoinError(400, "join request too large")
        try:
            return pr.JoinRequest.FromString(data)
        except Exception:
            raise JoinError(400, "cannot unmarshal join request") from None

    async def _serve(self, request: web.Request, single_pc: bool) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return plain(404, "404 page not found")
        try:
            params = self.validate_join(request, single_pc)
        except JoinError as e:
            return plain(e.status, e.message)
        existing = self._resumable(params)
        if existing is not None:
            return await self._resume(request, existing, params)
        try:
            participant = await self._join(params)
        except JoinError as e:
            return plain(e.status, e.message)
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=MAX_SIGNAL_MESSAGE, autoping=True)
        try:
            await ws.prepare(request)
        except Exception:
            participant.close(pm.DisconnectReason.SIGNAL_CLOSE, send_leave=False)
            raise
        await self._start_session(participant, params)
        await self._run_socket(ws, participant)
        return ws

    async def _join(self, params: JoinParams) -> RtcParticipant:
        claims = params.claims
        info = pm.ParticipantInfo(
            sid=ids.new_id(ids.PARTICIPANT), identity=claims.identity, name=claims.name,
            metadata=params.metadata or claims.metadata, state=pm.ParticipantInfo.State.JOINING,
            permission=self.permission_from(claims, params.video),
            kind=KINDS.get(claims.kind.lower(), pm.ParticipantInfo.Kind.STANDARD), version=1,
        )
        info.attributes.update(claims.attributes or {})
        info.attributes.update({k: v for k, v in params.attributes.items() if v})
        now = time.time()
        info.joined_at, info.joined_at_ms = int(now), int(now * 1000)
        domain_p = Participant(info)
        create = proto_room.CreateRoomRequest(name=params.room_name, room_preset=claims.room_preset or "")
        if claims.room_config is not None:
            c = claims.room_config
            create.empty_timeout, create.departure_timeout = c.empty_timeout, c.departure_timeout
            create.max_participants, create.metadata = c.max_participants, c.metadata
            if c.HasField("egress"):
                create.egress.CopyFrom(c.egress)
            create.agents.extend(c.agents)
        may_create = self.config.room.auto_create or bool(claims.video.room_create)
        try:
            room, previous = await self.rooms.join(create, domain_p, may_create=may_create)
        except RoomNotFound:
            raise JoinError(404, "requested room does not exist") from None
        except RoomFull:
            raise JoinError(503, "room has exceeded its max participants") from None
        except ValueError as e:  # an unknown room preset
            raise JoinError(400, str(e)) from None
        pref, until = self.ice_preferences.pop((room.name, claims.identity), ("", 0.0))
        participant = RtcParticipant(self, room, domain_p, params.settings, claims=claims,
                                     ice_preference=pref if until > time.monotonic() else "")
        domain_p.connection = participant
        self.participants[info.sid] = participant
        if previous is not None and isinstance(previous.connection, RtcParticipant):
            previous.connection.close(pm.DisconnectReason.DUPLICATE_IDENTITY)
        return participant

    def permission_from(self, claims: Claims, video: dict) -> pm.ParticipantPermission:
        v = claims.video
        assert v is not None
        can_publish = bool(video.get("canPublish", True))
        perm = pm.ParticipantPermission(
            can_subscribe=bool(video.get("canSubscribe", True)), can_publish=can_publish,
            # LiveKit: canPublishData defaults to canPublish
            can_publish_data=bool(video.get("canPublishData", can_publish)),
            hidden=bool(v.hidden), recorder=bool(v.recorder), agent=bool(v.agent),
            can_update_metadata=bool(v.can_update_own_metadata),
            can_subscribe_metrics=bool(v.can_subscribe_metrics),
        )
        for s in v.can_publish_sources or []:
            src = SOURCES.get(str(s).lower())
            if src is not None:
                perm.can_publish_sources.append(src)
        return perm

    async def _start_session(self, p: RtcParticipant, params: JoinParams) -> None:
        await p.create_transports()
        room = p.room
        others = [o.info for o in room.participants.values() if o is not p.p and not o.info.permission.hidden]
        p.send_signal(pr.SignalResponse(join=pr.JoinResponse(
            room=room.to_proto(), participant=p.info, other_participants=others,
            server_version=SERVER_VERSION, subscriber_primary=False, ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            server_info=pm.ServerInfo(edition=pm.ServerInfo.Edition.Standard, version=SERVER_VERSION,
                                      protocol=PROTOCOL_VERSION, node_id=f"lkserver-{__version__}"),
            enabled_publish_codecs=[pm.Codec(mime="audio/opus"), pm.Codec(mime="video/VP8"),
                                    pm.Codec(mime="video/H264")],
            fast_publish=p.permission.can_publish,
        )))
        p.ws_attached.set()
        self._broadcast_participant(room, p.p)
        self._auto_subscribe_existing(p)
        jr = params.join_request
        if jr is not None:
            for req in jr.add_track_requests:
                info = p.add_track_info(req)
                if info is not None:
                    p.send_signal(pr.SignalResponse(track_published=pr.TrackPublishedResponse(cid=req.cid, track=info)))
            if jr.HasField("publisher_offer") and jr.publisher_offer.sdp:
                await p.on_offer(jr.publisher_offer)

    async def _run_socket(self, ws: web.WebSocketResponse, p: RtcParticipant) -> None:
        writer = asyncio.ensure_future(self._write_socket(ws, p))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    req = pr.SignalRequest()
                    try:
                        req.ParseFromString(msg.data)
                    except Exception:
                        log.warning("bad_signal_frame", identity=p.identity, size=len(msg.data))
                        continue
                elif msg.type == WSMsgType.TEXT:
                    p.use_json = True
                    req = pr.SignalRequest()
                    try:
                        Parse(msg.data, req, ignore_unknown_fields=True)
                    except Exception:
                        log.warning("bad_signal_frame", identity=p.identity, size=len(msg.data))
                        continue
                else:
                    break
                if p.closed:
                    break
                try:
                    await p.handle(req)
                except Exception:
                    log.exception("signal_handler_failed", identity=p.identity,
                                  message=req.WhichOneof("message") or "")
        finally:
            if p.ws is ws and not p.closed:
                p.detach_socket()
            await asyncio.wait([writer], timeout=2.0)
            writer.cancel()

    async def _write_socket(self, ws: web.WebSocketResponse, p: RtcParticipant) -> None:
        p.ws = ws
        try:
            while True:
                msg = await p.queue.get()
                if msg is None:
                    break
                if msg.WhichOneof("message") is None:
                    continue
                if p.use_json:
                    await ws.send_str(MessageToJson(msg))
                else:
                    await ws.send_bytes(msg.SerializeToString())
        except (ConnectionError, RuntimeError):
            pass
        finally:
            if not ws.closed:
                await ws.close()

    # -- resume ----------------------------------------------------------------------------------

    def _resumable(self, params: JoinParams) -> Optional[RtcParticipant]:
        if not params.reconnect or not params.reconnect_sid:
            return None
        p = self.participants.get(params.reconnect_sid)
        if p is None or p.closed or p.identity != params.claims.identity or p.room.name != params.room_name:
            return None
        return p

    async def _resume(self, request: web.Request, p: RtcParticipant, params: JoinParams) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=MAX_SIGNAL_MESSAGE)
        await ws.prepare(request)
        if (p.room.name, p.identity) in self.drop_next_resume:
            self.drop_next_resume.discard((p.room.name, p.identity))
            await ws.close()
            return ws
        old_ws = p.ws
        # a fresh queue for the new socket; the old writer (if any) stops on its own sentinel
        p.detach_socket()
        p.queue = asyncio.Queue(p.queue.maxsize)
        if old_ws is not None and not old_ws.closed:
            await old_ws.close()
        p.last_signal = time.monotonic()
        p.ws_attached.set()
        log.info("participant_resumed", identity=p.identity, room=p.room.name)
        p.send_signal(pr.SignalResponse(reconnect=pr.ReconnectResponse(
            server_info=pm.ServerInfo(edition=pm.ServerInfo.Edition.Standard, version=SERVER_VERSION,
                                      protocol=PROTOCOL_VERSION))))
        # the client re-offers its publisher transport with an ICE restart; refresh the rest
        self._send_room_state(p)
        if not p.settings.single_pc and p.slots:
            p.sub_in_flight = False
            p.spawn(p.negotiate_subscriber())
        await self._run_socket(ws, p)
        return ws

    def _send_room_state(self, p: RtcParticipant) -> None:
        others = [o.info for o in p.room.participants.values() if not o.info.permission.hidden or o is p.p]
        p.send_signal(pr.SignalResponse(update=pr.ParticipantUpdate(participants=others)))

    # -- room-level plumbing --------------------------------------------------------------------

    def _rtc_participants(self, room: Room) -> list[RtcParticipant]:
        return [p.connection for p in room.participants.values() if isinstance(p.connection, RtcParticipant)]

    def _broadcast_participant(self, room: Room, who: Participant) -> None:
        if room.participants.get(who.identity) is not who:
            return  # gone: the others were told it disconnected
        msg = pr.SignalResponse(update=pr.ParticipantUpdate(participants=[who.info]))
        for p in self._rtc_participants(room):
            if who.info.permission.hidden and p.p is not who:
                continue
            p.send_signal(msg)

    def _broadcast_gone(self, room: Room, info: pm.ParticipantInfo) -> None:
        self.speaker_levels.get(room.name, {}).pop(info.sid, None)
        if info.permission.hidden:
            return
        msg = pr.SignalResponse(update=pr.ParticipantUpdate(participants=[info]))
        for p in self._rtc_participants(room):
            p.send_signal(msg)

    def _broadcast_room(self, room: Room) -> None:
        msg = pr.SignalResponse(room_update=pr.RoomUpdate(room=room.to_proto()))
        for p in self._rtc_participants(room):
            p.send_signal(msg)

    def publish(self, p: RtcParticipant, track: PublishedTrack) -> None:
        """Media arrived for a track: announce it and subscribe whoever should receive it."""
        if track.published or p.closed:
            return
        track.published = True
        if track.is_video and track.dynacast is None:
            track.dynacast = DynacastState(published_at=time.monotonic())
        self.rooms.track_published(p.room, p.p, track.info)
        for other in self._rtc_participants(p.room):
            if other is p or other.closed:
                continue
            other.track_available(track)
            if other.settings.auto_subscribe and other.permission.can_subscribe and self.may_subscribe(other, track):
                other.add_subscription(track)

    def withdraw(self, p: RtcParticipant, track: PublishedTrack) -> None:
        """Take a track away from the room's subscribers (it may be published again later)."""
        for sub in list(track.subscriptions.values()):
            sub.subscriber.remove_subscription(sub)
        self.speakers.get(p.room.name, {}).pop(track.sid, None)
        if track.published:
            track.published = False
            self.rooms.track_unpublished(p.room, p.p, track.sid)
            for other in self._rtc_participants(p.room):
                if other is not p:
                    other.track_gone(track)

    def unpublish(self, p: RtcParticipant, track: PublishedTrack) -> None:
        self.withdraw(p, track)
        p.tracks.pop(track.sid, None)
        if p.tracks_by_mid.get(track.mid) is track:
            del p.tracks_by_mid[track.mid]
        gone = [up for up in (track.receiver.layers if track.receiver is not None else []) if up is not None]
        for up in gone:
            p.ups_by_ssrc.pop(up.ssrc, None)
            self.retired["received_packets"] += up.packets
        for ssrc in [s for s, up in p.rtx_ups.items() if up in gone]:
            del p.rtx_ups[ssrc]

    def arrived(self, p: RtcParticipant) -> None:
        """A participant moved into p.room: tell it (RoomMovedResponse), republish, subscribe."""
        room = p.room
        others = [o.info for o in room.participants.values() if o is not p.p and not o.info.permission.hidden]
        p.send_signal(pr.SignalResponse(room_moved=pr.RoomMovedResponse(
            room=room.to_proto(), token=self.token_for(p, room.name), participant=p.info,
            other_participants=others)))
        self._broadcast_participant(room, p.p)
        for track in p.tracks.values():
            if track.up is not None:
                if not track.is_video:
                    self.observe_audio(p, track, track.up)
                self.publish(p, track)
        self._auto_subscribe_existing(p)

    def token_for(self, p: RtcParticipant, room_name: str) -> str:
        """A join token like the participant's own, for another room (signed with the first key)."""
        from ..auth import AccessToken, VideoGrants

        key, secret = next(iter(self.config.keys.items()))
        claims = p.claims
        video = dataclasses.replace(claims.video, room=room_name) if claims is not None and claims.video \
            else VideoGrants(room_join=True, room=room_name)
        tok = AccessToken(key, secret).with_identity(p.identity).with_grants(video)
        if p.info.name:
            tok.with_name(p.info.name)
        if p.info.metadata:
            tok.with_metadata(p.info.metadata)
        if claims is not None and claims.kind:
            tok.with_kind(claims.kind)  # type: ignore[arg-type]
        return tok.to_jwt()

    def _auto_subscribe_existing(self, p: RtcParticipant) -> None:
        if not (p.settings.auto_subscribe and p.permission.can_subscribe):
            return
        for other in self._rtc_participants(p.room):
            if other is p:
                continue
            for track in other.tracks.values():
                if track.published and track.sid not in p.subscriptions and self.may_subscribe(p, track):
                    p.add_subscription(track)

    def enforce_permissions(self, room: Room, who: Participant) -> None:
        """After UpdateParticipant: tracks it may no longer publish go, as do its subscriptions if
        it may no longer subscribe (LiveKit pkg/rtc/participant.go SetPermission)."""
        p = who.connection
        if not isinstance(p, RtcParticipant) or p.closed:
            return
        for track in list(p.tracks.values()):
            if track.published and not p.can_publish_source(track.info.source):
                self.unpublish(p, track)
                p.send_signal(pr.SignalResponse(track_unpublished=pr.TrackUnpublishedResponse(track_sid=track.sid)))
        could, can = p.could_subscribe, p.permission.can_subscribe
        p.could_subscribe = can
        if not can:
            for sub in list(p.subscriptions.values()):
                p.remove_subscription(sub)
        elif not could:
            self._auto_subscribe_existing(p)

    def remember_ice_preference(self, p: RtcParticipant, preference: str) -> None:
        self.ice_preferences[(p.room.name, p.identity)] = (preference, time.monotonic() + ICE_PREFERENCE_TTL)

    def simulate_speaker(self, p: RtcParticipant, seconds: int) -> None:
        def send(level: float) -> None:
            msg = pr.SignalResponse(speakers_changed=pr.SpeakersChanged(
                speakers=[pm.SpeakerInfo(sid=p.sid, level=level, active=level > 0)]))
            for other in self._rtc_participants(p.room):
                other.send_signal(msg)

        send(0.9)
        asyncio.get_running_loop().call_later(max(seconds, 0), send, 0.0)

    def may_subscribe(self, subscriber: RtcParticipant, track: PublishedTrack) -> bool:
        perms = track.owner.subscription_permission
        if perms is None or perms.all_participants:
            return True
        for tp in perms.track_permissions:
            if tp.participant_sid == subscriber.sid or tp.participant_identity == subscriber.identity:
                return tp.all_tracks or track.sid in tp.track_sids
        return False

    def update_subscriptions(self, p: RtcParticipant, sids: list[str], subscribe: bool) -> None:
        if subscribe and not p.permission.can_subscribe:
            return
        for sid in sids:
            track = self._find_track(p.room, sid)
            if track is None or track.owner is p:
                continue
            current = p.subscriptions.get(sid)
            if subscribe and current is None and track.published:
                if self.may_subscribe(p, track):
                    p.add_subscription(track)
                else:
                    p.send_signal(pr.SignalResponse(subscription_permission_update=pr.SubscriptionPermissionUpdate(
                        participant_sid=track.owner.sid, track_sid=sid, allowed=False)))
            elif not subscribe and current is not None:
                p.remove_subscription(current)

    def _api_subscriptions(self, room: Room, who: Participant, sids: list[str], subscribe: bool) -> None:
        if isinstance(who.connection, RtcParticipant):
            self.update_subscriptions(who.connection, sids, subscribe)

    def set_subscription_permission(self, p: RtcParticipant, perms: pr.SubscriptionPermission) -> None:
        p.subscription_permission = perms
        for track in p.tracks.values():
            for sub in list(track.subscriptions.values()):
                if not self.may_subscribe(sub.subscriber, track):
                    sub.subscriber.remove_subscription(sub)
                    sub.subscriber.send_signal(pr.SignalResponse(
                        subscription_permission_update=pr.SubscriptionPermissionUpdate(
                            participant_sid=p.sid, track_sid=track.sid, allowed=False)))
        # newly allowed participants with auto-subscribe get the tracks now
        for other in self._rtc_participants(p.room):
            if other is p or not other.settings.auto_subscribe or not other.permission.can_subscribe:
                continue
            for track in p.tracks.values():
                if track.published and track.sid not in other.subscriptions and self.may_subscribe(other, track):
                    other.add_subscription(track)

    def _find_track(self, room: Room, sid: str) -> Optional[PublishedTrack]:
        for p in self._rtc_participants(room):
            t = p.tracks.get(sid)
            if t is not None:
                return t
        return None

    def route_data(self, sender: RtcParticipant, packet: pm.DataPacket) -> None:
        identities = set(packet.destination_identities)
        sids = set(packet.user.destination_sids) if packet.HasField("user") else set()
        for p in self._rtc_participants(sender.room):
            if p is sender:
                continue
            if (identities or sids) and p.identity not in identities and p.sid not in sids:
                continue
            p.send_data(packet)

    # -- media quality: layers, dynacast, allocation, stream state, connection quality ----------

    def _refresh_layers(self, p: RtcParticipant, now: float) -> None:
        """Once a second: follow layers the publishers started or stopped, let tracks the
        allocator paused resume, and let dynacast's delayed downgrades go out."""
        for sub in p.subscriptions.values():
            if sub.down is not None:
                sub.down.select()
        if p.settings.allow_pause and any(s.down is not None and s.down.bandwidth_paused
                                          for s in p.subscriptions.values()):
            self.reallocate(p)  # a paused track may resume once its minimum wait is over
        for track in p.tracks.values():
            if track.published and track.is_video:
                self._dynacast(track, now)

    def subscriptions_changed(self, track: PublishedTrack) -> None:
        if track.is_video and track.published:
            self._dynacast(track, time.monotonic())

    def _dynacast(self, track: PublishedTrack, now: float) -> None:
        """Tell the publisher which layers anyone wants (SubscribedQualityUpdate)."""
        state = track.dynacast
        if state is None or track.codec is None:
            return
        wanted = OFF
        for sub in track.subscriptions.values():
            if sub.disabled:
                continue
            layer = sub.max_layer
            down = sub.down
            if down is not None:
                layer = min(layer, down.bandwidth_layer)
                if down.current is not None:
                    layer = max(layer, down.current.layer)
            wanted = max(wanted, layer)
        send = state.update(wanted, now)
        if send is not None:
            track.owner.send_signal(pr.SignalResponse(
                subscribed_quality_update=subscribed_quality_update(track.info, track.codec.mime, send)))

    def bandwidth_estimate(self, p: RtcParticipant, bitrate: float) -> None:
        """A subscriber's REMB: commit link capacity on congestion, then re-allocate."""
        p.estimate = float(bitrate)
        tracks, audio = self._allocation_inputs(p)
        video = sum(t.layer_bitrates[t.key.down.current.layer] for t in tracks  # type: ignore[attr-defined]
                    if t.key.down is not None and t.key.down.current is not None  # type: ignore[attr-defined]
                    and not t.key.down.paused)  # type: ignore[attr-defined]
        # with no video flowing the estimate has nothing to measure (browsers' REMB counts the
        # packets that carry abs-send-time) and only decays: no congestion is read from it then
        usage = audio + video if video else 0.0
        log.debug("remb", identity=p.identity, kbps=round(bitrate / 1000), usage_kbps=round(usage / 1000),
                  capacity_kbps=round(min(p.channel.capacity, 1e12) / 1000))
        before = p.channel.capacity
        loss = max((t.key.down.remote_loss for t in tracks if t.key.down is not None), default=0.0)  # type: ignore[attr-defined]
        if p.channel.update(p.estimate, usage, time.monotonic(), loss):
            log.info("subscriber_capacity", identity=p.identity, capacity_kbps=round(p.channel.capacity / 1000),
                     usage_kbps=round(usage / 1000))
        self.reallocate(p, tracks, audio, congested=p.channel.capacity < before)

    def _allocation_inputs(self, p: RtcParticipant) -> tuple[list[AllocationTrack], float]:
        tracks, audio = [], 0.0
        now = time.monotonic()
        for sub in p.subscriptions.values():
            down = sub.down
            if down is None:
                continue
            receiver = down.receiver
            if not receiver.is_video:
                primary = receiver.primary
                audio += primary.bitrate if primary is not None else 0.0
                continue
            rates = [u.bitrate if u is not None and u.active(now) else 0.0 for u in receiver.layers]
            tracks.append(AllocationTrack(sub, OFF if sub.disabled else sub.max_layer, rates,
                                          1 if sub.track.info.source == pm.TrackSource.SCREEN_SHARE else 0))
        return tracks, audio

    def reallocate(self, p: RtcParticipant, tracks: Optional[list[AllocationTrack]] = None,
                   audio: float = 0.0, congested: bool = False) -> None:
        """Layers for a subscriber's video within its committed capacity (none: what it asks).
        Tracks are paused (subscriber_allow_pause) only when congestion lowered the capacity,
        not when a re-allocation finds the bitrates moved a little."""
        if tracks is None:
            tracks, audio = self._allocation_inputs(p)
        if not tracks:
            return
        unlimited = p.channel.capacity == float("inf")
        allocation = allocate(p.channel.capacity, tracks, audio, p.settings.allow_pause)
        now = time.monotonic()
        for sub, layer in allocation.items():
            down = sub.down  # type: ignore[attr-defined]
            if down is None or not self._allow_pause_change(sub, down, layer, now, p.channel.capacity, audio,
                                                            congested):
                continue
            limit = HIGH_LAYER if unlimited else layer
            if layer != OFF and down.bandwidth_layer != limit:
                down.bandwidth_layer = limit
                down.select()
                self.subscriptions_changed(sub.track)  # type: ignore[attr-defined]
        step = None if unlimited else deficient(tracks, allocation)
        if step is not None and now >= p.probe_until + PROBE_DURATION:
            p.probe_bps = max(1.2 * step, PROBE_MIN_BPS)
            p.probe_until = now + PROBE_DURATION
        elif step is None:
            p.probe_until = 0.0

    def _allow_pause_change(self, sub: Any, down: Any, layer: int, now: float, capacity: float,
                            audio: float, congested: bool) -> bool:
        """Pause a track the allocator gives no layer (subscriber_allow_pause) on congestion:
        PAUSED to the subscriber; resume it no sooner than PAUSED_MIN_WAIT later, at a keyframe
        (ACTIVE is sent when forwarding restarts). False while the track stays paused."""
        if layer == OFF:
            if congested and sub.subscriber.settings.allow_pause and not sub.disabled and not down.bandwidth_paused:
                down.pause(bandwidth=True)
                sub.paused_at = now
                sub.set_stream_state(pr.StreamState.PAUSED)
                rates = [round(u.bitrate / 1000) if u is not None else 0 for u in down.receiver.layers]
                log.info("stream_paused", identity=sub.subscriber.identity, track=sub.track.sid,
                         capacity_kbps=round(min(capacity, 1e12) / 1000), audio_kbps=round(audio / 1000),
                         layers_kbps="/".join(map(str, rates)))
                self.subscriptions_changed(sub.track)
            return False
        if down.bandwidth_paused:
            if now - sub.paused_at < PAUSED_MIN_WAIT:
                return False
            down.resume(bandwidth=True)
            log.info("stream_resumed", identity=sub.subscriber.identity, track=sub.track.sid)
        return True

    def _probe(self) -> None:
        """Every 50 ms: transport-cc feedback to publishers, and padding towards deficient
        subscribers so their REMB can show more room."""
        now = time.monotonic()
        for p in list(self.participants.values()):
            p.send_twcc_feedback()
            p.send_nacks(now)
            if p.probe_until <= now or p.closed:
                continue
            down = next((s.down for s in p.subscriptions.values()
                         if s.down is not None and s.down.rtx_ssrc and s.down.current is not None), None)
            if down is not None:
                down.send_padding(max(1, int(p.probe_bps * PROBE_INTERVAL / 8 / 300)))

    def _connection_quality(self) -> None:
        """ConnectionQualityUpdate when a participant's category changes (LiveKit, every 5 s)."""
        rooms: dict[str, list[pr.ConnectionQualityInfo]] = {}
        for p in list(self.participants.values()):
            if p.closed:
                continue
            for track in p.tracks.values():
                if track.info.muted:
                    continue  # mute freezes the score
                weight = loss_weight(track.codec.name if track.codec else "")
                for up in (track.receiver.layers if track.receiver is not None else []):
                    if up is not None and up.packets:
                        loss = up.quality_loss.take(*up.loss_counts())
                        if loss is not None:
                            p.scorer.add(loss, 1000 * up.jitter / up.clock_rate, 0, weight)
            for sub in p.subscriptions.values():
                down = sub.down
                if down is not None and down.current is not None and down.remote_counts is not None:
                    loss = down.quality_loss.take(*down.remote_counts)
                    if loss is None:
                        continue
                    layers = max((u.layer for u in down.receiver.layers if u), default=0)
                    distance = min(down.desired_layer(), layers) - down.current.layer
                    weight = loss_weight(sub.track.codec.name if sub.track.codec else "")
                    p.scorer.add(loss, 1000 * down.remote_jitter / down.receiver.clock_rate,
                                 distance if down.receiver.is_video else 0, weight)
            before = p.scorer.quality
            after = p.scorer.window()
            if after != before or not p.quality_sent:
                p.quality_sent = True
                rooms.setdefault(p.room.name, []).append(pr.ConnectionQualityInfo(
                    participant_sid=p.sid, quality=after, score=round(p.scorer.mos, 2)))
        for room_name, updates in rooms.items():
            room = self.rooms.get_room(room_name)
            if room is None:
                continue
            for p in self._rtc_participants(room):
                # each participant hears about itself and about those it subscribes to
                watched = {p.sid} | {sub.track.owner.sid for sub in p.subscriptions.values()}
                mine = [u for u in updates if u.participant_sid in watched]
                if mine:
                    p.send_signal(pr.SignalResponse(connection_quality=pr.ConnectionQualityUpdate(updates=mine)))

    # -- speakers --------------------------------------------------------------------------------

    def observe_audio(self, p: RtcParticipant, track: PublishedTrack, up: UpTrack) -> None:
        if not up.audio_level_ext:
            return
        state = SpeakerState(p.sid)
        self.speakers.setdefault(p.room.name, {})[track.sid] = state

        def on_level(level: int) -> None:
            state.total += 1
            if level <= SPEAKER_ACTIVE_LEVEL:
                state.active += 1
                state.linear += math.pow(10, -level / 20)

        up.on_audio_level = on_level

    def _update_speakers(self) -> None:
        for room_name, tracks in list(self.speakers.items()):
            room = self.rooms.get_room(room_name)
            if room is None:
                self.speakers.pop(room_name, None)
                continue
            levels: dict[str, float] = {}
            for track_sid, st in tracks.items():
                owner = st.owner
                level = 0.0
                if st.total and st.active * 100 >= SPEAKER_MIN_PERCENTILE * st.total:
                    level = st.linear / st.active
                st.active = st.total = 0
                st.linear = 0.0
                st.level = (st.level + level) / 2 if level else 0.0  # smooth over two intervals
                if st.level > levels.get(owner, 0.0):
                    levels[owner] = st.level
            previous = self.speaker_levels.setdefault(room_name, {})
            changed = []
            for sid in set(previous) | set(levels):
                new, old = levels.get(sid, 0.0), previous.get(sid, 0.0)
                if (new > 0) != (old > 0) or abs(new - old) > 0.05:
                    changed.append(pm.SpeakerInfo(sid=sid, level=round(new, 3), active=new > 0))
            self.speaker_levels[room_name] = {k: v for k, v in levels.items() if v > 0}
            if changed:
                changed.sort(key=lambda s: -s.level)
                msg = pr.SignalResponse(speakers_changed=pr.SpeakersChanged(speakers=changed))
                for p in self._rtc_participants(room):
                    p.send_signal(msg)

    # -- leaving -----------------------------------------------------------------------------------

    async def participant_closed(self, p: RtcParticipant, reason: int) -> None:
        for track in list(p.tracks.values()):
            self.unpublish(p, track)
        await self.rooms.participant_left(p.room, p.p, reason)
        await p.teardown()
        self.participants.pop(p.sid, None)
        log.info("participant_closed", identity=p.identity, room=p.room.name,
                 reason=pm.DisconnectReason.Name(reason))

    async def perform_rpc(self, p: RtcParticipant, method: str, payload: str, timeout_ms: int) -> str:
        return await p.perform_rpc(method, payload, timeout_ms)


def _sdk(name: str) -> int:
    try:
        return pm.ClientInfo.SDK.Value(name.upper())
    except ValueError:
        return pm.ClientInfo.SDK.UNKNOWN


__all__ = ["JoinError", "RtcService"]
