"""Participants hosted inside the server: egress, ingress and SIP publish and subscribe with RTP.

A LocalParticipant is a room member like any other (it appears in ListParticipants and in
everyone's ParticipantUpdates, with its kind), but its media does not cross ICE/DTLS/SRTP: a
LoopbackTransport stands in for the WebRTC transport. Published tracks are fed with plain RTP
packets through `LocalTrack.write_rtp`; subscriptions deliver each forwarded RTP packet (with a
stable SSRC, payload type and contiguous sequence numbers, exactly as a remote subscriber would
get it) to a callback. Keyframe requests from subscribers reach the publisher's callback.

    me = await LocalParticipant.join(server.rtc, "room", "ingress-1", kind=pm.ParticipantInfo.Kind.INGRESS)
    track = me.publish_track(TrackCodec("audio/opus", 48000, 2), pm.TrackSource.MICROPHONE, "mic")
    track.write_rtp(rtp_packet_bytes)          # per packet, from the event loop thread
    sub = me.subscribe(other_track_sid, on_rtp=lambda pkt: ...)
    await me.leave()
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Callable, Optional

from livekit.protocol import models as pm
from livekit.protocol import room as proto_room
from livekit.protocol import rtc as pr

from .. import ids
from ..rooms import Participant
from .negotiation import TrackCodec
from .participant import JoinSettings, PublishedTrack, RtcParticipant, Subscription
from .rtp import PSFB_FIR, PSFB_PLI, RTCP_PSFB, feedback_ssrcs, iter_rtcp

if TYPE_CHECKING:
    from .service import RtcService

RtpCallback = Callable[[bytes], None]

# payload types a local subscriber sees (any fixed choice works: nothing is negotiated)
LOCAL_PT = {"audio/opus": 111, "audio/pcmu": 0, "audio/pcma": 8, "video/vp8": 96, "video/h264": 102}


class LoopbackTransport:
    """The WebRTC transport of a local participant: RTP in and out as function calls."""

    connected = True

    def __init__(self) -> None:
        self.sinks: dict[int, RtpCallback] = {}  # our subscription SSRC -> consumer
        self.keyframe_requests: dict[int, Callable[[], None]] = {}  # our published SSRC -> publisher

    def send_rtp(self, packet: bytes) -> None:
        if len(packet) >= 12:
            sink = self.sinks.get(struct.unpack_from("!I", packet, 8)[0])
            if sink is not None:
                sink(packet)

    def send_rtcp(self, packet: bytes) -> None:
        for p in iter_rtcp(packet):
            if p.pt == RTCP_PSFB and p.count in (PSFB_PLI, PSFB_FIR):
                request = self.keyframe_requests.get(feedback_ssrcs(p)[1])
                if request is not None:
                    request()

    async def close(self) -> None:
        self.sinks.clear()
        self.keyframe_requests.clear()


class LocalTrack:
    """A track a local participant publishes; feed it RTP with its `ssrc`."""

    def __init__(self, owner: "LocalParticipant", track: PublishedTrack, ssrc: int, pt: int) -> None:
        self.owner = owner
        self.track = track
        self.ssrc = ssrc
        self.pt = pt
        self.on_keyframe_request: Callable[[], None] = lambda: None

    @property
    def sid(self) -> str:
        return self.track.sid

    def write_rtp(self, packet: bytes) -> None:
        """One RTP packet (this track's SSRC and payload type), as a publisher would send it."""
        if not self.owner.closed:
            self.owner.on_publisher_rtp(packet)

    def mute(self, muted: bool) -> None:
        self.owner.set_muted(self.track, muted)

    def unpublish(self) -> None:
        self.owner.service.unpublish(self.owner, self.track)


class LocalParticipant(RtcParticipant):
    def __init__(self, service: "RtcService", room: Any, participant: Participant) -> None:
        super().__init__(service, room, participant, JoinSettings(auto_subscribe=False))
        self.loopback = LoopbackTransport()
        self.publisher = self.loopback  # type: ignore[assignment]
        self.ws_attached.set()
        self.has_signal = False  # no signalling socket to lose or time out
        self.on_track_published: Callable[[PublishedTrack], None] = lambda t: None
        self.on_track_unpublished: Callable[[PublishedTrack], None] = lambda t: None
        self.on_data: Callable[[pm.DataPacket], None] = lambda p: None
        self._local_mids = 0

    @classmethod
    async def join(cls, service: "RtcService", room_name: str, identity: str, *, name: str = "",
                   metadata: str = "", kind: int = pm.ParticipantInfo.Kind.STANDARD,
                   attributes: Optional[dict[str, str]] = None, hidden: bool = False,
                   can_publish: bool = True, can_subscribe: bool = True,
                   create_room: bool = True) -> "LocalParticipant":
        """Join `room_name` (created if needed and allowed); raises RoomNotFound / RoomFull."""
        import time

        now = time.time()
        info = pm.ParticipantInfo(
            sid=ids.new_id(ids.PARTICIPANT), identity=identity, name=name, metadata=metadata,
            state=pm.ParticipantInfo.State.JOINED, kind=kind, version=1,
            joined_at=int(now), joined_at_ms=int(now * 1000),
            permission=pm.ParticipantPermission(
                can_publish=can_publish, can_subscribe=can_subscribe, can_publish_data=can_publish,
                hidden=hidden, recorder=kind == pm.ParticipantInfo.Kind.EGRESS),
        )
        info.attributes.update(attributes or {})
        domain_p = Participant(info)
        room, previous = await service.rooms.join(proto_room.CreateRoomRequest(name=room_name), domain_p,
                                                   may_create=create_room)
        me = cls(service, room, domain_p)
        domain_p.connection = me
        service.participants[info.sid] = me
        if previous is not None and isinstance(previous.connection, RtcParticipant):
            previous.connection.close(pm.DisconnectReason.DUPLICATE_IDENTITY)
        service._broadcast_participant(room, domain_p)
        service.rooms.participant_active(room, domain_p)
        return me

    # -- publishing ------------------------------------------------------------------------------

    def publish_track(self, codec: TrackCodec, source: int, name: str = "", *, ssrc: int = 0,
                      width: int = 0, height: int = 0, stereo: bool = False) -> LocalTrack:
        """Declare a track; it is announced to the room when its first packet arrives."""
        kind = pm.TrackType.AUDIO if codec.kind == "audio" else pm.TrackType.VIDEO
        cid = f"local-{self._local_mids}"
        info = self.add_track_info(pr.AddTrackRequest(cid=cid, name=name, type=kind, source=source,
                                                      width=width, height=height, stereo=stereo))
        if info is None:
            raise PermissionError("this participant may not publish that source")
        self.pending.pop(cid, None)
        self._local_mids += 1
        mid = f"local{self._local_mids}"
        info.mid, info.mime_type = mid, codec.mime
        track = PublishedTrack(info, self)
        track.mid, track.codec = mid, codec
        ssrc = ssrc or self.new_ssrc()
        track.ssrcs[ssrc] = 0
        self.tracks[info.sid] = track
        self.tracks_by_mid[mid] = track
        local = LocalTrack(self, track, ssrc, LOCAL_PT.get(codec.mime.lower(), 96))
        self.loopback.keyframe_requests[ssrc] = lambda: local.on_keyframe_request()
        return local

    # -- subscribing -----------------------------------------------------------------------------

    def media_transport_for_subscribe(self) -> Any:
        return self.loopback

    def add_subscription(self, track: PublishedTrack) -> Subscription:
        sub = Subscription(track, self, self.new_ssrc())
        self.subscriptions[track.sid] = sub
        track.subscriptions[self.identity] = sub
        self.service.subscriptions_changed(track)
        sub.mid = "local"
        mime = track.codec.mime.lower() if track.codec else ""
        if mime == "audio/red":  # local participants take plain opus
            mime, sub.red_primary = "audio/opus", True
        sub.pt = LOCAL_PT.get(mime, 96)
        sub.ready = True
        sub.attach()
        return sub

    def subscribe(self, track_sid: str, on_rtp: RtpCallback) -> Subscription:
        """Receive a track's forwarded RTP packets; raises KeyError for an unknown track."""
        track = self.service._find_track(self.room, track_sid)
        if track is None or not track.published:
            raise KeyError(track_sid)
        sub = self.subscriptions.get(track_sid) or self.add_subscription(track)
        self.loopback.sinks[sub.ssrc] = on_rtp
        return sub

    def unsubscribe(self, track_sid: str) -> None:
        sub = self.subscriptions.get(track_sid)
        if sub is not None:
            self.loopback.sinks.pop(sub.ssrc, None)
            self.remove_subscription(sub, renegotiate=False)

    def request_keyframe(self, track_sid: str) -> None:
        track = self.service._find_track(self.room, track_sid)
        if track is not None:
            track.request_keyframe()

    def remote_tracks(self) -> list[PublishedTrack]:
        """Every published track of the other participants in the room."""
        return [t for p in self.service._rtc_participants(self.room) if p is not self
                for t in p.tracks.values() if t.published]

    # -- what the room tells a participant ---------------------------------------------------------

    def track_available(self, track: PublishedTrack) -> None:
        self.on_track_published(track)

    def track_gone(self, track: PublishedTrack) -> None:
        sub = self.subscriptions.get(track.sid)
        if sub is not None:
            self.loopback.sinks.pop(sub.ssrc, None)
        self.on_track_unpublished(track)

    def send_data(self, packet: pm.DataPacket) -> None:
        self.on_data(packet)

    def send_signal(self, msg: pr.SignalResponse) -> None:
        return  # no signalling client; hooks above carry what a local participant needs

    def publish_data(self, payload: bytes, *, topic: str = "", reliable: bool = True,
                     destination_identities: Optional[list[str]] = None) -> None:
        packet = pm.DataPacket(
            kind=pm.DataPacket.Kind.RELIABLE if reliable else pm.DataPacket.Kind.LOSSY,
            participant_identity=self.identity, participant_sid=self.sid,
            destination_identities=destination_identities or [],
            user=pm.UserPacket(payload=payload, topic=topic, participant_identity=self.identity,
                               participant_sid=self.sid, destination_identities=destination_identities or []))
        self.service.route_data(self, packet)

    async def leave(self, reason: int = pm.DisconnectReason.CLIENT_INITIATED) -> None:
        self.close(reason, send_leave=False)

    async def create_transports(self) -> None:  # pragma: no cover - nothing to create
        return
