"""A participant connected over signalling: its transports, published tracks and subscriptions.

Follows livekit-server's ParticipantImpl (pkg/rtc/participant*.go) as the official clients see
it: AddTrackRequest -> TrackPublishedResponse; the publisher offers and we answer; media
arriving on a negotiated section publishes the track; subscriptions ride on a server-offered
subscriber transport (v0, /rtc) or on recvonly sections of the client's single transport (v1,
/rtc/v1, with MediaSectionsRequirement when more are needed). Data packets from the client are
stamped with its identity and routed by the room.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from livekit.protocol import models as pm
from livekit.protocol import rtc as pr

from .. import ids
from ..logs import get_logger
from ..rooms.errors import RpcError
from . import sdp as sdplib
from .sdp import simulcast_send_rids
from .forward import HIGH, DownTrack, TrackReceiver, UpTrack
from .negotiation import (
    EXT_ABS_SEND_TIME,
    EXT_AUDIO_LEVEL,
    EXT_MID,
    EXT_RID,
    EXT_RRID,
    EXT_TWCC,
    LocalParams,
    OutSection,
    TrackCodec,
    answer_application_section,
    accepted_extmaps,
    answer_publish_section,
    publish_rtx,
    choose_publish_codec,
    codec_for_subscriber,
    pack_stream_id,
    rejected_section,
    rid_layers,
    subscriber_codec,
    write_description,
)
from .rtp import (
    RTCP_PSFB,
    RTCP_RTPFB,
    RTPFB_NACK,
    RTCP_RR,
    RTCP_SR,
    PSFB_AFB,
    PSFB_FIR,
    PSFB_PLI,
    build_nack,
    build_pli,
    build_rr,
    feedback_ssrcs,
    fir_ssrcs,
    get_extension,
    iter_rtcp,
    abs_send_time_extension,
    parse_nack,
    parse_remb,
    parse_report_blocks,
    parse_rtp,
    unwrap_rtx,
    parse_sr,
)
from .quality import ChannelObserver, QualityScorer
from .transport import WebRtcTransport
from .twcc import TwccRecorder

if TYPE_CHECKING:
    from ..rooms import Participant, Room
    from .service import RtcService

log = get_logger("lkserver.rtc.participant")

# a client that does not read its signalling gets disconnected past this many queued messages
SIGNAL_QUEUE_LIMIT = 1024
# data channel bytes queued for one participant before lossy packets are dropped
LOSSY_BUFFER_LIMIT = 1 << 20
RELIABLE_BUFFER_LIMIT = 16 << 20
RPC_ACK_TIMEOUT = 2.0
RPC_DEFAULT_RESPONSE_TIMEOUT_MS = 10000
RPC_MAX_PAYLOAD = 15 * 1024
SERVER_SSRC = 1  # sender SSRC of our feedback packets
MAX_PENDING_TRACKS = 64  # AddTrackRequests waiting for their media
SUB_ABS_SEND_TIME_ID = 3  # the abs-send-time extension id we offer subscribers (v0)

SOURCE_LETTER = {pm.TrackSource.CAMERA: "C", pm.TrackSource.MICROPHONE: "M",
                 pm.TrackSource.SCREEN_SHARE: "S", pm.TrackSource.SCREEN_SHARE_AUDIO: "s"}


@dataclass
class JoinSettings:
    protocol: int = 0
    auto_subscribe: bool = True
    adaptive_stream: bool = False
    single_pc: bool = False
    client_info: pm.ClientInfo = field(default_factory=pm.ClientInfo)
    allow_pause: bool = False  # subscriber_allow_pause: the allocator may pause video (PAUSED)


class PublishedTrack:
    """A track a participant publishes: its TrackInfo and the RTP stream(s) carrying it."""

    def __init__(self, info: pm.TrackInfo, owner: "RtcParticipant") -> None:
        self.info = info
        self.owner = owner
        self.mid = ""
        self.codec: Optional[TrackCodec] = None
        self.receiver: Optional[TrackReceiver] = None  # the streams, once media arrives
        self.ssrcs: dict[int, int] = {}  # SSRCs declared in the offer -> simulcast layer
        self.rid_layers: dict[str, int] = {}  # simulcast rid -> layer
        self.published = False
        self.subscriptions: dict[str, "Subscription"] = {}  # subscriber identity -> subscription
        self.audio_level_ext = 0
        self.dynacast: Any = None  # quality.DynacastState once published (video)
        self.rtx_pt = 0  # the publisher's RTX payload type for this track (video), 0 without
        self.nack = False  # we may NACK the publisher for lost packets

    @property
    def sid(self) -> str:
        return self.info.sid

    @property
    def is_video(self) -> bool:
        return self.info.type == pm.TrackType.VIDEO

    @property
    def up(self) -> Optional[UpTrack]:
        """The first stream that arrived (audio, or the lowest layer received)."""
        return self.receiver.primary if self.receiver is not None else None

    def request_keyframe(self, layer: int = -1) -> None:
        if self.receiver is not None:
            self.receiver.request_keyframe(layer)

    def ensure_receiver(self) -> TrackReceiver:
        if self.receiver is None:
            codec = self.codec
            assert codec is not None
            owner = self.owner

            def send_pli(ssrc: int) -> None:
                owner.media_transport_for_publish().send_rtcp(build_pli(SERVER_SSRC, ssrc))

            self.receiver = TrackReceiver(self.sid, codec.name, codec.clock_rate, self.is_video, send_pli,
                                          self.audio_level_ext)
        return self.receiver

    def layer_for_size(self, width: int, height: int) -> int:
        """LiveKit's GetQualityForDimension: the smallest layer at least 0.9x the view size."""
        layers = sorted(self.info.layers, key=lambda v: v.quality)
        if not layers:
            return HIGH
        portrait = self.info.height > self.info.width
        want = width if portrait else height
        for v in layers:
            have = v.width if portrait else v.height
            if have >= 0.9 * want:
                return min(v.quality, HIGH)
        return min(layers[-1].quality, HIGH)


class Subscription:
    """A track one participant receives: its section, SSRC and DownTrack."""

    def __init__(self, track: PublishedTrack, subscriber: "RtcParticipant", ssrc: int) -> None:
        self.track = track
        self.subscriber = subscriber
        self.ssrc = ssrc
        self.rtx_ssrc = 0
        self.rtx_pt = 0
        self.mid = ""
        self.pt = 0
        self.down: Optional[DownTrack] = None
        self.ready = False  # negotiated: the subscriber knows this SSRC
        self.disabled = False  # UpdateTrackSettings.disabled
        self.max_layer = HIGH  # UpdateTrackSettings quality / size
        # what the subscriber was last told (StreamStateUpdate); None: nothing yet, or inactive
        # (disabled by the subscriber or muted, which LiveKit does not notify)
        self.stream_state: Optional[int] = None
        self.paused_at = 0.0  # when the allocator paused it
        self.abs_send_time_ext = 0
        self.red_primary = False  # the track is RED, this subscriber takes opus

    def attach(self) -> None:
        """Connect to the publisher's streams once both they and the negotiation exist."""
        receiver = self.track.receiver
        if receiver is None or not self.ready or not self.pt:
            return
        transport = self.subscriber.media_transport_for_subscribe()
        if self.down is None:
            self.down = DownTrack(receiver, self.subscriber.sid, self.ssrc, self.pt, transport.send_rtp,
                                  transport.send_rtcp, self.rtx_ssrc, self.rtx_pt)
            if self.disabled:
                self.down.pause()
            if self.track.is_video:
                self.down.on_resume = self.resumed
            self.down.max_layer = self.max_layer
            self.down.red_primary = self.red_primary
            if self.abs_send_time_ext:
                ext_id = self.abs_send_time_ext
                self.down.ext_fn = lambda: abs_send_time_extension(ext_id, time.time())
            self.subscriber.downs_by_ssrc[self.ssrc] = self.down
            receiver.subscribe(self.down)
        else:
            self.down.pt, self.down.rtx_pt, self.down.rtx_ssrc = self.pt, self.rtx_pt, self.rtx_ssrc
            self.down.red_primary = self.red_primary

    def set_stream_state(self, state: Optional[int]) -> None:
        """Tell the subscriber when its video becomes ACTIVE or PAUSED (by the allocator)."""
        if state == self.stream_state:
            return
        self.stream_state = state
        if state is not None:
            info = pr.StreamStateInfo(participant_sid=self.track.owner.sid, track_sid=self.track.sid, state=state)
            self.subscriber.send_signal(pr.SignalResponse(
                stream_state_update=pr.StreamStateUpdate(stream_states=[info])))

    def resumed(self) -> None:
        self.set_stream_state(pr.StreamState.ACTIVE)

    def set_max_layer(self, layer: int) -> None:
        self.max_layer = layer
        if self.down is not None and self.down.max_layer != layer:
            self.down.max_layer = layer
            self.down.select()

    def detach(self) -> None:
        if self.down is not None:
            retired = self.subscriber.service.retired
            retired["forwarded_packets"] += self.down.packets_sent
            retired["forwarded_bytes"] += self.down.octets_sent
            self.down.receiver.unsubscribe(self.down)
            self.subscriber.downs_by_ssrc.pop(self.ssrc, None)
            self.down = None


@dataclass
class Slot:
    """A media section of the subscriber transport (v0) or a recvonly section (v1)."""

    mid: str
    kind: str
    sub: Optional[Subscription] = None


class RtcParticipant:
    def __init__(self, service: "RtcService", room: "Room", participant: "Participant",
                 settings: JoinSettings, claims: Any = None, ice_preference: str = "") -> None:
        self.service = service
        self.claims = claims  # the join token's claims (a moved participant gets a token like it)
        self.ice_preference = ice_preference  # "tcp" limits our candidates to ICE-TCP
        self.could_subscribe = participant.info.permission.can_subscribe
        self.room = room
        self.p = participant
        self.settings = settings
        self.queue: asyncio.Queue[Optional[pr.SignalResponse]] = asyncio.Queue(SIGNAL_QUEUE_LIMIT)
        self.ws_attached = asyncio.Event()
        self.ws: Any = None  # the current signalling WebSocket
        self.use_json = False  # the client sent text frames: answer in protojson
        self.detached_at = time.monotonic()
        self.subscription_permission: Optional[pr.SubscriptionPermission] = None
        self.closed = False
        self.has_signal = True  # a signalling WebSocket (local participants have none)
        self.close_reason: int = pm.DisconnectReason.UNKNOWN_REASON
        self.last_signal = time.monotonic()
        # transports: v0 has a publisher and a subscriber transport; v1 one for both
        self.publisher: Optional[WebRtcTransport] = None
        self.subscriber: Optional[WebRtcTransport] = None
        # publishing
        self.pending: dict[str, pm.TrackInfo] = {}  # cid -> TrackInfo awaiting media
        self.tracks: dict[str, PublishedTrack] = {}  # sid -> track
        self.tracks_by_mid: dict[str, PublishedTrack] = {}
        self.ups_by_ssrc: dict[int, UpTrack] = {}
        self.ignored_ssrcs: set[int] = set()
        self.rtx_primary: dict[int, int] = {}  # RTX SSRC -> media SSRC (a=ssrc-group:FID)
        self.rtx_ups: dict[int, UpTrack] = {}  # RTX SSRC -> the stream it repairs
        self.rtx_pts: set[int] = set()  # RTX payload types of the sections we receive
        self.mid_ext = self.rid_ext = self.rrid_ext = self.twcc_ext = 0
        self.twcc = TwccRecorder(SERVER_SSRC)
        self.last_offer: Optional[sdplib.SessionDescription] = None
        # subscribing
        self.subscriptions: dict[str, Subscription] = {}  # track sid -> subscription
        self.downs_by_ssrc: dict[int, DownTrack] = {}
        self.slots: list[Slot] = []
        self.sub_offer_id = 0
        self.sub_in_flight = False
        self.sub_dirty = False
        self.sub_pts: dict[tuple[str, str], int] = {}
        self.used_ssrcs: set[int] = set()
        # data
        self.channels: dict[str, Any] = {}
        self.rpc_pending: dict[str, asyncio.Future] = {}
        self.rpc_acks: dict[str, asyncio.Future] = {}
        self.last_reliable_seq = 0
        self._tasks: set[asyncio.Task] = set()
        self.connected_at = 0.0
        self.first_media_at = 0.0
        # bandwidth towards this subscriber (REMB) and the probe the allocator runs to raise it
        self.estimate = 0.0
        self.probe_until = 0.0
        self.probe_bps = 0.0
        self.scorer = QualityScorer()
        self.quality_sent = False
        self.channel = ChannelObserver()

    # -- identity ------------------------------------------------------------------------------

    @property
    def sid(self) -> str:
        return self.p.sid

    @property
    def identity(self) -> str:
        return self.p.identity

    @property
    def info(self) -> pm.ParticipantInfo:
        return self.p.info

    @property
    def permission(self) -> pm.ParticipantPermission:
        return self.p.info.permission

    @property
    def hidden(self) -> bool:
        return self.p.info.permission.hidden

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- ParticipantConnection: what the room calls ----------------------------------------------

    def send_signal(self, msg: pr.SignalResponse) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            log.warning("signal_queue_full", identity=self.identity, room=self.room.name)
            self.close(pm.DisconnectReason.SIGNAL_CLOSE, send_leave=False)

    # hooks for participants hosted in the server (rtc/local.py); remote clients learn through
    # ParticipantUpdates instead
    def track_available(self, track: "PublishedTrack") -> None:
        return

    def track_gone(self, track: "PublishedTrack") -> None:
        return

    def detach_socket(self) -> None:
        """The signalling socket is gone (or being replaced): the writer stops, resume may follow."""
        self.ws_attached.clear()
        self.detached_at = time.monotonic()
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            pass

    def send_data(self, packet: pm.DataPacket) -> None:
        label = "_lossy" if packet.kind == pm.DataPacket.Kind.LOSSY else "_reliable"
        channel = self.channels.get(label)
        if channel is None or channel.readyState != "open":
            return
        limit = LOSSY_BUFFER_LIMIT if label == "_lossy" else RELIABLE_BUFFER_LIMIT
        if channel.bufferedAmount > limit:
            log.warning("data_dropped", identity=self.identity, channel=label, buffered=channel.bufferedAmount)
            return
        try:
            channel.send(packet.SerializeToString())
        except Exception:
            pass

    async def perform_rpc(self, method: str, payload: str, timeout_ms: int) -> str:
        """Server-initiated RPC (RoomService.PerformRpc), as livekit-server sends it."""
        if len(payload.encode()) > RPC_MAX_PAYLOAD:
            raise RpcError(1402, "Request payload too large")
        timeout_ms = timeout_ms or RPC_DEFAULT_RESPONSE_TIMEOUT_MS
        rpc_id = str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        ack, response = loop.create_future(), loop.create_future()
        self.rpc_acks[rpc_id], self.rpc_pending[rpc_id] = ack, response
        self.send_data(pm.DataPacket(
            kind=pm.DataPacket.Kind.RELIABLE, participant_identity=rpc_id,
            rpc_request=pm.RpcRequest(id=rpc_id, method=method, payload=payload,
                                      response_timeout_ms=timeout_ms, version=1)))
        try:
            try:
                await asyncio.wait_for(asyncio.shield(ack), RPC_ACK_TIMEOUT)
            except asyncio.TimeoutError:
                if not response.done():
                    raise RpcError(1501, "Connection timeout") from None
            try:
                return await asyncio.wait_for(response, timeout_ms / 1000)
            except asyncio.TimeoutError:
                raise RpcError(1502, "Response timeout") from None
        finally:
            self.rpc_acks.pop(rpc_id, None)
            self.rpc_pending.pop(rpc_id, None)

    def close(self, reason: int, send_leave: bool = True) -> None:
        """Disconnect (the room removed us, a duplicate joined, the room closed, ...)."""
        if self.closed:
            return
        if send_leave:
            self.send_signal(pr.SignalResponse(leave=pr.LeaveRequest(
                can_reconnect=False, reason=reason, action=pr.LeaveRequest.Action.DISCONNECT)))
        self.close_reason = reason
        self.closed = True
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            pass
        # unpublish now, before whoever closed us announces the departure
        for track in list(self.tracks.values()):
            self.service.unpublish(self, track)
        self.spawn(self.service.participant_closed(self, reason))

    async def teardown(self) -> None:
        """Release media: subscriptions, published tracks, transports."""
        for sub in list(self.subscriptions.values()):
            self.remove_subscription(sub, renegotiate=False)
        for fut in list(self.rpc_pending.values()):
            if not fut.done():
                fut.set_exception(RpcError(1503, "Recipient disconnected"))
        for transport in (self.publisher, self.subscriber):
            if transport is not None:
                await transport.close()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()

    # -- moving to another room (RoomService.MoveParticipant) ----------------------------------

    def before_move(self) -> None:
        """Leave the current room's media: subscriptions go, tracks are withdrawn (media keeps flowing)."""
        for sub in list(self.subscriptions.values()):
            self.remove_subscription(sub)
        for track in self.tracks.values():
            self.service.withdraw(self, track)

    def after_move(self, room: "Room") -> None:
        self.room = room
        self.service.arrived(self)

    # -- transports ----------------------------------------------------------------------------

    def media_transport_for_publish(self) -> WebRtcTransport:
        assert self.publisher is not None
        return self.publisher

    def media_transport_for_subscribe(self) -> WebRtcTransport:
        t = self.publisher if self.settings.single_pc else self.subscriber
        assert t is not None
        return t

    async def create_transports(self) -> None:
        self.publisher = self.service.new_transport(f"{self.identity}/pub")
        await self.publisher.start()
        self.publisher.on_rtp = self.on_publisher_rtp
        self.publisher.on_rtcp = self.on_publisher_rtcp if not self.settings.single_pc else self.on_single_rtcp
        self.publisher.on_connected = self.on_publisher_connected
        self.publisher.on_closed = self.on_transport_closed
        self.publisher.on_datachannel = self.on_datachannel

    async def ensure_subscriber(self) -> WebRtcTransport:
        if self.subscriber is None:
            self.subscriber = self.service.new_transport(f"{self.identity}/sub")
            await self.subscriber.start()
            self.subscriber.on_rtcp = self.on_subscriber_rtcp
            self.subscriber.on_connected = self.on_subscriber_connected
            self.subscriber.on_closed = self.on_transport_closed
        return self.subscriber

    def local_params(self, t: WebRtcTransport) -> LocalParams:
        candidates = t.local_candidates()
        if self.ice_preference == "tcp":
            candidates = [c for c in candidates if c.transport == "tcp"] or candidates
        return LocalParams(t.ice.local_ufrag, t.ice.local_pwd, self.service.fingerprint_lines, candidates)

    def on_publisher_connected(self) -> None:
        if not self.connected_at:
            self.connected_at = time.monotonic()
        self.service.rooms.participant_active(self.room, self.p)
        if self.settings.single_pc:
            self.on_subscriber_connected()

    def on_subscriber_connected(self) -> None:
        for sub in self.subscriptions.values():
            sub.attach()

    def on_transport_closed(self, reason: str) -> None:
        log.info("transport_closed", identity=self.identity, reason=reason)

    # -- signal requests -------------------------------------------------------------------------

    async def handle(self, req: pr.SignalRequest) -> None:
        self.last_signal = time.monotonic()
        which = req.WhichOneof("message")
        handler = getattr(self, f"on_{which}", None) if which else None
        if handler is None:
            log.debug("signal_ignored", identity=self.identity, message=which or "empty")
            return
        await handler(getattr(req, which))

    async def on_ping(self, _: int) -> None:
        self.send_signal(pr.SignalResponse(pong=int(time.time() * 1000)))

    async def on_ping_req(self, ping: pr.Ping) -> None:
        self.send_signal(pr.SignalResponse(pong_resp=pr.Pong(
            last_ping_timestamp=ping.timestamp, timestamp=int(time.time() * 1000))))

    async def on_leave(self, leave: pr.LeaveRequest) -> None:
        log.info("participant_leave_request", identity=self.identity, room=self.room.name)
        self.close(pm.DisconnectReason.CLIENT_INITIATED, send_leave=False)

    async def on_trickle(self, trickle: pr.TrickleRequest) -> None:
        # ICE-lite: the client's checks tell us its addresses; its candidates are not needed
        return

    async def on_add_track(self, req: pr.AddTrackRequest) -> None:
        info = self.add_track_info(req)
        if info is None:
            return
        self.send_signal(pr.SignalResponse(track_published=pr.TrackPublishedResponse(cid=req.cid, track=info)))

    def add_track_info(self, req: pr.AddTrackRequest) -> Optional[pm.TrackInfo]:
        """The TrackInfo for an AddTrackRequest, or None (with a RequestResponse) if refused."""
        if not self.can_publish_source(req.source):
            log.info("publish_refused", identity=self.identity, source=pm.TrackSource.Name(req.source))
            self.send_signal(pr.SignalResponse(request_response=pr.RequestResponse(
                reason=pr.RequestResponse.Reason.NOT_ALLOWED, message="does not have permission to publish",
                add_track=req)))
            return None
        if req.cid in self.pending:
            return self.pending[req.cid]
        if len(self.pending) >= MAX_PENDING_TRACKS:
            self.send_signal(pr.SignalResponse(request_response=pr.RequestResponse(
                reason=pr.RequestResponse.Reason.LIMIT_EXCEEDED, message="too many pending tracks",
                add_track=req)))
            return None
        kind = "A" if req.type == pm.TrackType.AUDIO else "V"
        sid = req.sid if req.sid.startswith("TR_") else ids.new_id(ids.TRACK + kind + SOURCE_LETTER.get(req.source, "U"))
        info = pm.TrackInfo(
            sid=sid, type=req.type, name=req.name, muted=req.muted, width=req.width, height=req.height,
            simulcast=len(req.layers) > 1, disable_dtx=req.disable_dtx, source=req.source,
            layers=req.layers, stereo=req.stereo, disable_red=req.disable_red, encryption=req.encryption,
            stream=req.stream, audio_features=req.audio_features,
            version=pm.TimedVersion(unix_micro=int(time.time() * 1e6)),
        )
        if req.simulcast_codecs:
            for sc in req.simulcast_codecs:
                info.codecs.append(pm.SimulcastCodecInfo(mime_type=sc.codec, cid=sc.cid, layers=sc.layers))
        self.pending[req.cid] = info
        return info

    def can_publish_source(self, source: int) -> bool:
        perm = self.permission
        if not perm.can_publish:
            return False
        if perm.can_publish_sources:
            return source in perm.can_publish_sources
        return True

    async def on_mute(self, req: pr.MuteTrackRequest) -> None:
        track = self.tracks.get(req.sid)
        if track is None:
            for info in self.pending.values():
                if info.sid == req.sid:
                    info.muted = req.muted
            return
        self.set_muted(track, req.muted)

    def set_muted(self, track: PublishedTrack, muted: bool) -> None:
        if track.info.muted == muted:
            return
        track.info.muted = muted
        for t in self.p.info.tracks:
            if t.sid == track.sid:
                t.muted = muted
        self.service.rooms._participant_changed(self.room, self.p)

    async def on_update_metadata(self, req: pr.UpdateParticipantMetadata) -> None:
        if not self.permission.can_update_metadata:
            if req.request_id:
                self.send_signal(pr.SignalResponse(request_response=pr.RequestResponse(
                    request_id=req.request_id, reason=pr.RequestResponse.Reason.NOT_ALLOWED,
                    message="does not have permission to update own metadata", update_metadata=req)))
            return
        limits = self.service.limits
        if (limits.max_metadata_size and len(req.metadata.encode()) > limits.max_metadata_size) or \
           (limits.max_participant_name_length and len(req.name.encode()) > limits.max_participant_name_length):
            if req.request_id:
                self.send_signal(pr.SignalResponse(request_response=pr.RequestResponse(
                    request_id=req.request_id, reason=pr.RequestResponse.Reason.LIMIT_EXCEEDED,
                    message="metadata or name too large", update_metadata=req)))
            return
        await self.service.rooms.update_participant(
            self.room.name, self.identity, name=req.name, metadata=req.metadata, attributes=dict(req.attributes))
        if req.request_id:
            self.send_signal(pr.SignalResponse(request_response=pr.RequestResponse(
                request_id=req.request_id, reason=pr.RequestResponse.Reason.OK, update_metadata=req)))

    async def on_subscription(self, req: pr.UpdateSubscription) -> None:
        sids = list(req.track_sids)
        for pt in req.participant_tracks:
            sids.extend(pt.track_sids)
        self.service.update_subscriptions(self, sids, req.subscribe)

    async def on_track_setting(self, req: pr.UpdateTrackSettings) -> None:
        """Adaptive stream: the subscriber's view picks the layer; disabled pauses the track
        (livekit pkg/rtc/subscribedtrack.go; dynacast then sees what is wanted)."""
        log.debug("track_settings", identity=self.identity, tracks=",".join(req.track_sids), disabled=req.disabled,
                  quality=req.quality, width=req.width, height=req.height)
        for sid in req.track_sids:
            sub = self.subscriptions.get(sid)
            if sub is None:
                continue
            sub.disabled = req.disabled
            if sub.track.is_video:
                if req.width > 0 and req.height > 0:
                    layer = sub.track.layer_for_size(req.width, req.height)
                elif req.quality == pm.VideoQuality.OFF:
                    layer = -1
                else:
                    layer = min(int(req.quality), HIGH)
                if layer >= 0:
                    sub.set_max_layer(layer)
                elif sub.down is not None:
                    sub.disabled = True
            if sub.down is not None:
                if sub.disabled:
                    sub.down.pause()
                    sub.set_stream_state(None)
                else:
                    sub.down.resume()
            self.service.subscriptions_changed(sub.track)
        self.service.reallocate(self)

    async def on_subscription_permission(self, req: pr.SubscriptionPermission) -> None:
        self.service.set_subscription_permission(self, req)

    async def on_sync_state(self, req: pr.SyncState) -> None:
        return

    async def on_simulate(self, req: pr.SimulateScenario) -> None:
        """Client-requested failure drills (livekit pkg/rtc/room.go onSimulateScenario)."""
        which = req.WhichOneof("scenario")
        log.info("simulate_scenario", identity=self.identity, scenario=which or "")
        if which == "speaker_update":
            self.service.simulate_speaker(self, req.speaker_update)
        elif which in ("node_failure", "migration"):
            # drop the participant without a leave: the client finds out on its own
            self.close(pm.DisconnectReason.SIGNAL_CLOSE, send_leave=False)
        elif which == "server_leave":
            self.close(pm.DisconnectReason.SERVER_SHUTDOWN)
        elif which == "switch_candidate_protocol":
            # the client follows this with a full reconnect; its next session gets only these candidates
            if req.switch_candidate_protocol == pr.CandidateProtocol.TCP:
                self.service.remember_ice_preference(self, "tcp")
        elif which in ("disconnect_signal_on_resume", "disconnect_signal_on_resume_no_messages"):
            self.service.drop_next_resume.add((self.room.name, self.identity))

    # -- publishing: offers from the client ---------------------------------------------------------

    async def on_offer(self, offer: pr.SessionDescription) -> None:
        try:
            sd = sdplib.parse(offer.sdp)
        except sdplib.SdpError as e:
            log.warning("bad_offer", identity=self.identity, error=str(e))
            self.send_signal(pr.SignalResponse(leave=pr.LeaveRequest(
                can_reconnect=False, reason=pm.DisconnectReason.STATE_MISMATCH,
                action=pr.LeaveRequest.Action.DISCONNECT)))
            self.close(pm.DisconnectReason.STATE_MISMATCH, send_leave=False)
            return
        log.debug("offer_received", identity=self.identity, sections=len(sd.media))
        transport = self.media_transport_for_publish()
        transport.set_remote(sd)
        self.last_offer = sd
        if self.p.info.state == pm.ParticipantInfo.State.JOINING:
            self.p.info.state = pm.ParticipantInfo.State.JOINED
        sections: list[OutSection] = []
        sending_mids = set()
        for m in sd.media:
            if m.kind == "application":
                sections.append(answer_application_section(m))
            elif m.kind not in ("audio", "video") or m.rejected:
                sections.append(rejected_section(m))
            elif m.direction in ("sendonly", "sendrecv"):
                codec = choose_publish_codec(m, allow_red=self.red_allowed(m))
                if codec is None:
                    sections.append(rejected_section(m))
                    continue
                self.bind_publish_section(m, codec)
                sending_mids.add(m.mid)
                sections.append(answer_publish_section(m, codec, rtx=True))
            elif m.direction == "recvonly" and self.settings.single_pc:
                sections.append(self.answer_subscribe_slot(m))
            else:
                sections.append(OutSection(m.mid, m.kind, "inactive", m.codecs[:1], accepted_extmaps(m)))
        self.mid_ext = next((e.id for m in sd.media for e in m.extmaps if e.uri == EXT_MID), 0)
        self.rid_ext = next((e.id for m in sd.media for e in m.extmaps if e.uri == EXT_RID), 0)
        self.rrid_ext = next((e.id for m in sd.media for e in m.extmaps if e.uri == EXT_RRID), 0)
        self.twcc_ext = next((e.id for m in sd.media if m.kind == "video" for e in m.extmaps
                              if e.uri == EXT_TWCC), 0)
        for mid, track in list(self.tracks_by_mid.items()):
            if mid not in sending_mids:
                self.service.unpublish(self, track)
        answer = write_description(sections, self.local_params(transport), "passive")
        mid_to_track = {}
        if self.settings.single_pc:
            mid_to_track = {s.mid: s.sub.track.sid for s in self.slots if s.sub is not None}
        self.send_signal(pr.SignalResponse(answer=pr.SessionDescription(
            type="answer", sdp=answer, id=offer.id, mid_to_track_id=mid_to_track)))
        if self.settings.single_pc:
            for slot in self.slots:
                if slot.sub is not None and not slot.sub.ready:
                    slot.sub.ready = True
                    slot.sub.attach()
            self.request_media_sections()

    def red_allowed(self, m: sdplib.Media) -> bool:
        """Whether the track a section carries may use audio RED (not `disable_red`)."""
        track = self.tracks_by_mid.get(m.mid)
        if track is not None:
            return not track.info.disable_red and track.codec is not None and track.codec.name.lower() == "red"
        info = self.pending.get(m.msid_track) or next(
            (i for i in self.pending.values() if i.type == pm.TrackType.AUDIO and not i.mid), None)
        return info is not None and not info.disable_red

    def bind_publish_section(self, m: sdplib.Media, codec: sdplib.Codec) -> None:
        """Tie an offered section to the pending AddTrackRequest it carries (LiveKit's matching:
        msid track id == cid, else the first pending track of the same kind)."""
        if m.mid in self.tracks_by_mid:
            return
        want = pm.TrackType.AUDIO if m.kind == "audio" else pm.TrackType.VIDEO
        cid = m.msid_track
        info = self.pending.pop(cid, None) if cid else None
        if info is None:
            for c, candidate in list(self.pending.items()):
                if candidate.type == want and not candidate.mid:
                    info = self.pending.pop(c)
                    break
        if info is None:
            log.debug("unmatched_publish_section", identity=self.identity, mid=m.mid)
            return
        kind = "audio" if want == pm.TrackType.AUDIO else "video"
        info.mid = m.mid
        info.mime_type = f"{kind}/{codec.name}"
        track = PublishedTrack(info, self)
        track.mid = m.mid
        track.codec = TrackCodec(info.mime_type, codec.clock_rate, codec.channels, codec.fmtp)
        track.audio_level_ext = m.extmap_id(EXT_AUDIO_LEVEL)
        rids = simulcast_send_rids(m) if m.extmap_id(EXT_RID) else []
        if rids:
            track.rid_layers = rid_layers(rids)
            info.simulcast = len(rids) > 1
        for ssrc in m.primary_ssrcs():
            track.ssrcs[ssrc] = 0
        repair = publish_rtx(m, codec)
        track.rtx_pt = repair.pt if repair is not None else 0
        if repair is not None:
            self.rtx_pts.add(repair.pt)
        track.nack = track.is_video and "nack" in codec.rtcp_fb
        for media, rtx in m.rtx_pairs().items():
            self.rtx_primary[rtx] = media
        self.tracks[info.sid] = track
        self.tracks_by_mid[m.mid] = track

    # -- publishing: media from the client ----------------------------------------------------------

    def on_publisher_rtp(self, buf: bytes) -> None:
        h = parse_rtp(buf)
        if h is None:
            return
        if self.twcc_ext:
            seq = get_extension(buf, h, self.twcc_ext)
            if seq is not None and len(seq) >= 2:
                self.twcc.record((seq[0] << 8) | seq[1], int(time.monotonic() * 1e6), h.ssrc)
        up = self.ups_by_ssrc.get(h.ssrc)
        if up is not None:
            up.on_rtp(buf, h, time.monotonic())
            return
        rtx_up = self.rtx_ups.get(h.ssrc)
        if rtx_up is None and (h.pt in self.rtx_pts or h.ssrc in self.rtx_primary):
            rtx_up = self.repaired_stream(buf, h)
            if rtx_up is None:
                return  # repairs a stream that has not arrived yet
        if rtx_up is not None:
            original = unwrap_rtx(buf, h, rtx_up.pt, rtx_up.ssrc)
            if original is not None:  # (padding-only packets are the publisher's probes)
                oh = parse_rtp(original)
                if oh is not None:
                    rtx_up.on_repair(original, oh, time.monotonic())
            return
        if h.ssrc in self.ignored_ssrcs:
            return
        found = self.stream_for_new_ssrc(buf, h)
        if found is None:
            return
        track, layer, rid = found
        receiver = track.ensure_receiver()
        if receiver.layers[layer] is not None:
            # a new SSRC for a layer we have (the publisher restarted its encoder)
            self.ups_by_ssrc.pop(receiver.layers[layer].ssrc, None)
        up = receiver.add_layer(h.ssrc, layer, rid)
        up.pt = h.pt
        up.nack_enabled = track.nack
        self.ups_by_ssrc[h.ssrc] = up
        for v in track.info.layers:
            if v.quality == layer or len(track.info.layers) == 1:
                v.ssrc, v.rid = h.ssrc, rid
        if not self.first_media_at:
            self.first_media_at = time.monotonic()
        if not track.published:
            if not track.is_video:
                self.service.observe_audio(self, track, up)
            self.service.publish(self, track)
        up.on_rtp(buf, h, time.monotonic())

    def repaired_stream(self, buf: bytes, h: Any) -> Optional[UpTrack]:
        """The stream an RTX SSRC seen for the first time repairs: by the offer's FID group, by
        the repaired-rtp-stream-id of a simulcast layer, or by the RTX payload type of a
        single-stream section. Learned once per SSRC."""
        up = None
        media = self.rtx_primary.get(h.ssrc)
        if media is not None:
            up = self.ups_by_ssrc.get(media)
        elif self.mid_ext:
            mid = get_extension(buf, h, self.mid_ext)
            track = self.tracks_by_mid.get(mid.decode(errors="replace")) if mid else None
            if track is not None and track.receiver is not None:
                rrid = get_extension(buf, h, self.rrid_ext) if self.rrid_ext else None
                if rrid and track.rid_layers:
                    layer = track.rid_layers.get(rrid.decode(errors="replace"))
                    up = track.receiver.layers[layer] if layer is not None else None
                elif h.pt == track.rtx_pt and not track.rid_layers:
                    up = track.receiver.primary
        if up is not None:
            self.rtx_ups[h.ssrc] = up
        return up

    def stream_for_new_ssrc(self, buf: bytes, h: Any) -> Optional[tuple[PublishedTrack, int, str]]:
        """(track, simulcast layer, rid) of a stream seen for the first time (reference
        sfu-quality.md §5.2): declared SSRCs, then the MID and RID extensions, then the one
        section still waiting for its stream. RTX streams (repaired rid) are not forwarded."""
        for track in self.tracks.values():
            if h.ssrc in track.ssrcs:
                return track, track.ssrcs[h.ssrc], ""
        track = None
        if self.mid_ext:
            mid = get_extension(buf, h, self.mid_ext)
            if mid:
                track = self.tracks_by_mid.get(mid.decode(errors="replace"))
        if track is not None and track.rid_layers:
            if self.rrid_ext and get_extension(buf, h, self.rrid_ext):
                return None  # an RTX stream of a layer
            rid = get_extension(buf, h, self.rid_ext) if self.rid_ext else None
            if rid:
                name = rid.decode(errors="replace")
                if name in track.rid_layers:
                    return track, track.rid_layers[name], name
            return None
        if track is not None:
            if track.receiver is not None and track.receiver.primary is not None:
                return None  # a second stream on a single-layer section (RTX or FEC)
            return track, 0, ""
        # a single undeclared stream of a kind with one candidate section (as aiortc's router)
        candidates = [t for t in self.tracks.values() if t.receiver is None and not t.ssrcs and not t.rid_layers]
        return (candidates[0], 0, "") if len(candidates) == 1 else None

    def on_publisher_rtcp(self, buf: bytes) -> None:
        now = time.time()
        for p in iter_rtcp(buf):
            if p.pt == RTCP_SR:
                sr = parse_sr(p)
                if sr is not None:
                    up = self.ups_by_ssrc.get(sr.ssrc)
                    if up is not None:
                        up.on_sender_report(sr, now)

    def on_single_rtcp(self, buf: bytes) -> None:
        self.on_publisher_rtcp(buf)
        self.on_subscriber_rtcp(buf)

    def send_nacks(self, now: float) -> None:
        """NACK the publisher for the packets its streams are missing (on the 50 ms tick)."""
        if self.publisher is None and not self.settings.single_pc:
            return
        transport = self.media_transport_for_publish()
        if not transport.connected:
            return
        for up in self.ups_by_ssrc.values():
            if up.missing:
                seqs = up.nacks_due(now)
                if seqs:
                    transport.send_rtcp(build_nack(SERVER_SSRC, up.ssrc, seqs))

    def send_twcc_feedback(self) -> None:
        if self.twcc_ext and self.publisher is not None and self.publisher.connected:
            feedback = self.twcc.build()
            if feedback is not None:
                self.publisher.send_rtcp(feedback)

    def send_receiver_reports(self) -> None:
        if self.publisher is None or not self.publisher.connected or not self.ups_by_ssrc:
            return
        now = time.time()
        blocks = [b for up in self.ups_by_ssrc.values() if (b := up.report_block(now)) is not None]
        for i in range(0, len(blocks), 31):
            self.publisher.send_rtcp(build_rr(SERVER_SSRC, blocks[i:i + 31]))

    # -- subscribing --------------------------------------------------------------------------------

    def new_ssrc(self) -> int:
        while True:
            ssrc = random.getrandbits(32)
            if ssrc > 1 and ssrc not in self.used_ssrcs:
                self.used_ssrcs.add(ssrc)
                return ssrc

    def add_subscription(self, track: PublishedTrack) -> Subscription:
        sub = Subscription(track, self, self.new_ssrc())
        self.subscriptions[track.sid] = sub
        track.subscriptions[self.identity] = sub
        self.service.subscriptions_changed(track)
        kind = "video" if track.is_video else "audio"
        if self.settings.single_pc:
            self.request_media_sections()
        else:
            slot = next((s for s in self.slots if s.kind == kind and s.sub is None), None)
            if slot is None:
                slot = Slot(str(len(self.slots)), kind)
                self.slots.append(slot)
            slot.sub = sub
            sub.mid = slot.mid
            self.spawn(self.negotiate_subscriber())
        return sub

    def remove_subscription(self, sub: Subscription, renegotiate: bool = True) -> None:
        sub.detach()
        self.subscriptions.pop(sub.track.sid, None)
        sub.track.subscriptions.pop(self.identity, None)
        self.service.subscriptions_changed(sub.track)
        for slot in self.slots:
            if slot.sub is sub:
                slot.sub = None
        if renegotiate and not self.closed:
            if self.settings.single_pc:
                self.request_media_sections()
            else:
                self.spawn(self.negotiate_subscriber())

    async def negotiate_subscriber(self) -> None:
        """Offer the subscriber transport's current sections (v0); one offer in flight at a time."""
        if self.closed:
            return
        if self.sub_in_flight:
            self.sub_dirty = True
            return
        transport = await self.ensure_subscriber()
        self.sub_in_flight = True
        self.sub_dirty = False
        sections = []
        for slot in self.slots:
            sub = slot.sub
            if sub is None or sub.track.codec is None:
                default = TrackCodec("audio/opus", 48000, 2, "minptime=10;useinbandfec=1") if slot.kind == "audio" \
                    else TrackCodec("video/VP8", 90000)
                sections.append(OutSection(slot.mid, slot.kind, "inactive", [subscriber_codec(default, self.pt_for(default))]))
                continue
            codec = sub.track.codec
            sub.pt = self.pt_for(codec)
            owner = sub.track.owner
            stream = pack_stream_id(owner.sid, sub.track.sid)
            codecs = [subscriber_codec(codec, sub.pt)]
            if codec.name.lower() == "red":  # RED needs its primary codec alongside (and a fallback)
                opus = TrackCodec("audio/opus", 48000, 2, "minptime=10;useinbandfec=1")
                opus_pt = self.pt_for(opus)
                codecs = [subscriber_codec(TrackCodec("audio/red", 48000, 2, f"{opus_pt}/{opus_pt}"), sub.pt),
                          subscriber_codec(opus, opus_pt)]
            extmaps: list[tuple[int, str]] = []
            if sub.track.is_video:
                if not sub.rtx_ssrc:
                    sub.rtx_ssrc = self.new_ssrc()
                sub.rtx_pt = self.pt_for(TrackCodec("video/rtx", 90000, fmtp=f"apt={sub.pt}"))
                codecs.append(sdplib.Codec(sub.rtx_pt, "rtx", 90000, 0, f"apt={sub.pt}"))
                extmaps = [(SUB_ABS_SEND_TIME_ID, EXT_ABS_SEND_TIME)]
                sub.abs_send_time_ext = SUB_ABS_SEND_TIME_ID
            sections.append(OutSection(slot.mid, slot.kind, "sendonly", codecs, extmaps,
                                       ssrc=sub.ssrc, msid=f"{stream} {sub.track.sid}", cname=owner.sid,
                                       rtx_ssrc=sub.rtx_ssrc))
        self.sub_offer_id += 1
        offer = write_description(sections, self.local_params(transport), "actpass")
        self.send_signal(pr.SignalResponse(offer=pr.SessionDescription(type="offer", sdp=offer, id=self.sub_offer_id)))

    def pt_for(self, codec: TrackCodec) -> int:
        key = (codec.mime.lower(), codec.fmtp)
        pt = self.sub_pts.get(key)
        if pt is None:
            if codec.mime.lower() == "audio/opus" and 111 not in self.sub_pts.values():
                pt = 111
            else:
                used = set(self.sub_pts.values())
                pt = next(p for p in list(range(96, 111)) + list(range(112, 128)) if p not in used)
            self.sub_pts[key] = pt
        return pt

    async def on_answer(self, answer: pr.SessionDescription) -> None:
        if self.settings.single_pc or self.subscriber is None:
            return
        try:
            sd = sdplib.parse(answer.sdp)
        except sdplib.SdpError as e:
            log.warning("bad_answer", identity=self.identity, error=str(e))
            self.close(pm.DisconnectReason.STATE_MISMATCH)
            return
        self.subscriber.set_remote(sd)
        for slot in self.slots:
            sub = slot.sub
            if sub is not None:
                m = sd.by_mid(slot.mid)
                if m is not None and not m.rejected:
                    if sub.track.codec is not None and sub.track.codec.name.lower() == "red" and m.codecs:
                        # the client answered with its preference: RED as is, or opus only
                        sub.red_primary = m.codecs[0].name.lower() != "red"
                        sub.pt = m.codecs[0].pt
                    sub.ready = True
                    sub.attach()
        self.sub_in_flight = False
        if self.sub_dirty:
            await self.negotiate_subscriber()

    def answer_subscribe_slot(self, m: sdplib.Media) -> OutSection:
        """v1: put a subscription on a recvonly section of the client's offer, if one waits."""
        slot = next((s for s in self.slots if s.mid == m.mid), None)
        if slot is None:
            slot = Slot(m.mid, m.kind)
            self.slots.append(slot)
        if slot.sub is not None and slot.sub.track.sid not in self.subscriptions:
            slot.sub = None
        if slot.sub is None:
            waiting = [s for s in self.subscriptions.values() if not s.mid and
                       ("video" if s.track.is_video else "audio") == m.kind]
            if waiting:
                slot.sub = waiting[0]
                slot.sub.mid = m.mid
        sub = slot.sub
        if sub is None or sub.track.codec is None:
            return OutSection(m.mid, m.kind, "inactive", m.codecs[:1], accepted_extmaps(m))
        codec = codec_for_subscriber(m, sub.track.codec)
        extra: list[sdplib.Codec] = []
        sub.red_primary = False
        if sub.track.codec.name.lower() == "red":
            opus = next((c for c in m.codecs if c.name.upper() == "OPUS"), None)
            if codec is None or opus is None:
                codec, sub.red_primary = opus, True  # the client takes no RED: forward the primary
            elif opus is not None:
                extra = [sdplib.Codec(opus.pt, opus.name, opus.clock_rate, opus.channels, opus.fmtp)]
        if codec is None:
            log.warning("no_common_codec", identity=self.identity, track=sub.track.sid, mime=sub.track.codec.mime)
            slot.sub = None
            sub.mid = ""
            return OutSection(m.mid, m.kind, "inactive", m.codecs[:1], accepted_extmaps(m))
        sub.pt = codec.pt
        owner = sub.track.owner
        stream = pack_stream_id(owner.sid, sub.track.sid)
        fb = [f for f in codec.rtcp_fb if f in ("nack", "nack pli", "ccm fir", "goog-remb")]
        codecs = [sdplib.Codec(codec.pt, codec.name, codec.clock_rate, codec.channels, codec.fmtp, fb)] + extra
        rtx = next((c for c in m.codecs if c.name.lower() == "rtx" and c.fmtp_params().get("apt") == str(codec.pt)), None)
        if rtx is not None and sub.track.is_video:
            if not sub.rtx_ssrc:
                sub.rtx_ssrc = self.new_ssrc()
            sub.rtx_pt = rtx.pt
            codecs.append(sdplib.Codec(rtx.pt, rtx.name, rtx.clock_rate, 0, rtx.fmtp))
        else:
            sub.rtx_ssrc = sub.rtx_pt = 0
        extmaps = accepted_extmaps(m)
        sub.abs_send_time_ext = next((i for i, uri in extmaps if uri == EXT_ABS_SEND_TIME), 0) \
            if sub.track.is_video and "goog-remb" in fb else 0
        return OutSection(m.mid, m.kind, "sendonly", codecs, extmaps, ssrc=sub.ssrc,
                          msid=f"{stream} {sub.track.sid}", cname=owner.sid, rtx_ssrc=sub.rtx_ssrc)

    def request_media_sections(self) -> None:
        """v1: ask the client to offer again, with more recvonly sections if they are short."""
        if self.closed or not self.settings.single_pc:
            return
        waiting = [s for s in self.subscriptions.values() if not s.mid]
        stale = [s for s in self.slots if s.sub is not None and s.sub.track.sid not in self.subscriptions]
        if not waiting and not stale:
            return
        free = {"audio": 0, "video": 0}
        for s in self.slots:
            if s.sub is None or s.sub.track.sid not in self.subscriptions:
                free[s.kind] += 1
        need_a = sum(1 for s in waiting if not s.track.is_video) - free["audio"]
        need_v = sum(1 for s in waiting if s.track.is_video) - free["video"]
        log.debug("media_sections_requested", identity=self.identity, waiting=len(waiting), stale=len(stale),
                  audios=max(need_a, 0), videos=max(need_v, 0))
        self.send_signal(pr.SignalResponse(media_sections_requirement=pr.MediaSectionsRequirement(
            num_audios=max(need_a, 0), num_videos=max(need_v, 0))))

    def on_subscriber_rtcp(self, buf: bytes) -> None:
        now = time.monotonic()
        for p in iter_rtcp(buf):
            if p.pt == RTCP_PSFB:
                if p.count == PSFB_PLI:
                    self._keyframe_for(self.downs_by_ssrc.get(feedback_ssrcs(p)[1]))
                elif p.count == PSFB_FIR:
                    for ssrc in fir_ssrcs(p):
                        self._keyframe_for(self.downs_by_ssrc.get(ssrc))
                elif p.count == PSFB_AFB:
                    estimate = parse_remb(p)
                    if estimate is not None:
                        self.service.bandwidth_estimate(self, estimate[0])
            elif p.pt == RTCP_RTPFB and p.count == RTPFB_NACK:
                down = self.downs_by_ssrc.get(feedback_ssrcs(p)[1])
                if down is not None:
                    down.retransmit(parse_nack(p), now)
            elif p.pt in (RTCP_RR, RTCP_SR):
                for block in parse_report_blocks(p):
                    down = self.downs_by_ssrc.get(block.ssrc)
                    if down is not None:
                        down.remote_loss = block.fraction_lost / 256
                        down.remote_jitter = block.jitter
                        down.remote_counts = (block.highest_seq, block.cumulative_lost)

    @staticmethod
    def _keyframe_for(down: Optional[DownTrack]) -> None:
        if down is not None:
            layer = down.current.layer if down.current is not None else -1
            down.receiver.request_keyframe(layer)

    # -- data channels -------------------------------------------------------------------------

    def on_datachannel(self, channel: Any) -> None:
        label = channel.label
        self.channels[label] = channel
        kind = pm.DataPacket.Kind.LOSSY if label == "_lossy" else pm.DataPacket.Kind.RELIABLE

        @channel.on("message")
        def on_message(message: Any) -> None:
            if isinstance(message, str) or label not in ("_reliable", "_lossy"):
                return
            self.on_data_message(kind, message)

    def on_data_message(self, kind: int, data: bytes) -> None:
        if self.closed or not self.permission.can_publish_data:
            return
        packet = pm.DataPacket()
        try:
            packet.ParseFromString(data)
        except Exception:
            log.debug("bad_data_packet", identity=self.identity)
            return
        if kind == pm.DataPacket.Kind.RELIABLE and packet.sequence:
            if packet.sequence <= self.last_reliable_seq:
                return
            self.last_reliable_seq = packet.sequence
        packet.kind = kind
        packet.participant_sid = self.sid
        which = packet.WhichOneof("value")
        if which == "user":
            u = packet.user
            u.participant_sid = "" if self.hidden else self.sid
            u.participant_identity = "" if self.hidden else self.identity
            if packet.destination_identities:
                u.destination_identities[:] = packet.destination_identities
            else:
                packet.destination_identities[:] = u.destination_identities
        elif which == "rpc_ack":
            fut = self.rpc_acks.get(packet.rpc_ack.request_id)
            if fut is not None:
                if not fut.done():
                    fut.set_result(True)
                return
        elif which == "rpc_response":
            rid = packet.rpc_response.request_id
            fut = self.rpc_pending.get(rid)
            if fut is not None:
                ack = self.rpc_acks.get(rid)
                if ack is not None and not ack.done():
                    ack.set_result(True)
                if not fut.done():
                    r = packet.rpc_response
                    if r.WhichOneof("value") == "error":
                        fut.set_exception(RpcError(r.error.code, r.error.message))
                    else:
                        fut.set_result(r.payload)
                return
        elif which == "metrics":
            return
        packet.participant_identity = "" if self.hidden else self.identity
        self.service.route_data(self, packet)


def candidate_init_json(candidate: str, mid: str) -> str:
    return json.dumps({"candidate": candidate, "sdpMid": mid, "sdpMLineIndex": 0})
