"""WHIP ingress: an encoder POSTs its SDP offer with the stream key and publishes over WebRTC.

The HTTP exchange as LiveKit's ingress serves it (livekit/ingress pkg/whip/server.go; RFC 9725):
`POST <base>/<stream_key>` (or `POST <base>` with `Authorization: Bearer <stream_key>`) with an
`application/sdp` offer -> `201 Created`, the answer, `Location: <base>/<stream_key>/<resource_id>`
and an `ETag`; `DELETE` on the Location ends the session; `PATCH` with an
`application/trickle-ice-sdpfrag` body restarts ICE (new ufrag and password: a new answer
fragment) or is a no-op trickle (we are ICE-lite: the client's checks find us); `OPTIONS` is
answered for CORS. Errors answer the code's HTTP status with the message as the body.

The WebRTC side reuses the server's own stack (rtc/transport.py WebRtcTransport, the
negotiation helpers the SFU answers publishers with). By default the client's RTP is published
into the room untouched (passthrough: no decoding); with `enable_transcoding` it is
depacketized (depacketize.py), decoded and re-encoded like RTMP.
"""

from __future__ import annotations

import fractions
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from livekit.protocol import models as pm

from .. import ids
from ..logs import get_logger
from ..rtc import sdp as sdplib
from ..rtc.negotiation import (
    EXT_AUDIO_LEVEL,
    EXT_MID,
    LocalParams,
    OutSection,
    TrackCodec,
    answer_publish_section,
    choose_publish_codec,
    rejected_section,
    write_description,
)
from ..rtc.rtp import RTCP_SR, build_pli, get_extension, iter_rtcp, parse_rtp
from . import info as rules
from .depacketize import FrameAssembler
from .info import IngressError
from .session import IngressSession, TranscodingSession
from .transcode import make_decoder, packet

log = get_logger("lkserver.ingress.whip")

HTTP_STATUS = {"not_found": 404, "invalid_argument": 400, "permission_denied": 403,
               "failed_precondition": 412, "unavailable": 503, "resource_exhausted": 429,
               "unimplemented": 501, "internal": 500}
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Location, ETag",
        "Access-Control-Allow-Methods": "OPTIONS, POST, PATCH, DELETE",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match"}
CONNECT_TIMEOUT = 20.0  # from the answer to the first media packet
MEDIA_TIMEOUT = 15.0  # no packet for this long ends the session
SERVER_SSRC = 1


@dataclass
class InStream:
    """One media section the client sends."""

    kind: str
    mid: str
    codec: sdplib.Codec
    ssrcs: set[int]
    audio_level_ext: int = 0
    bytes_in: int = 0
    first_ts: int = -1
    first_arrival: float = 0.0


class WhipReceiver:
    """The WebRTC answerer of one WHIP session: SDP in/out, RTP and RTCP to callbacks."""

    def __init__(self, rtc: Any, name: str) -> None:
        self.rtc = rtc
        self.transport = rtc.new_transport(name)
        self.streams: list[InStream] = []
        self.by_ssrc: dict[int, InStream] = {}
        self.mid_ext = 0
        self.on_media: Callable[[InStream, bytes, Any], None] = lambda s, buf, h: None
        self.on_sender_report: Callable[[bytes], None] = lambda buf: None
        self.last_packet = 0.0

    async def answer(self, offer: str) -> str:
        try:
            sd = sdplib.parse(offer)
        except sdplib.SdpError as e:
            raise IngressError("invalid_argument", f"invalid SDP offer: {e}") from None
        sections: list[OutSection] = []
        kinds: set[str] = set()
        for m in sd.media:
            if m.kind not in ("audio", "video") or m.rejected or m.direction not in ("sendonly", "sendrecv"):
                sections.append(rejected_section(m))
                continue
            codec = choose_publish_codec(m)
            if codec is None:
                sections.append(rejected_section(m))
                continue
            if m.kind in kinds:
                raise IngressError("invalid_argument", "more than 1 track with given media kind")
            kinds.add(m.kind)
            self.streams.append(InStream(m.kind, m.mid, codec, set(m.primary_ssrcs()),
                                         m.extmap_id(EXT_AUDIO_LEVEL)))
            sections.append(answer_publish_section(m, codec))
        if not self.streams:
            raise IngressError("invalid_argument", "the offer sends no audio or video we can take "
                                                   "(Opus, VP8 or H.264 packetization-mode 1)")
        self.mid_ext = next((e.id for m in sd.media for e in m.extmaps if e.uri == EXT_MID), 0)
        for s in self.streams:
            for ssrc in s.ssrcs:
                self.by_ssrc[ssrc] = s
        t = self.transport
        await t.start()
        t.set_remote(sd)
        t.on_rtp = self._on_rtp
        t.on_rtcp = self._on_rtcp
        local = LocalParams(t.ice.local_ufrag, t.ice.local_pwd, self.rtc.fingerprint_lines, t.local_candidates())
        return write_description(sections, local, "passive")

    def _on_rtp(self, buf: bytes) -> None:
        h = parse_rtp(buf)
        if h is None:
            return
        self.last_packet = time.monotonic()
        s = self.by_ssrc.get(h.ssrc)
        if s is None:
            s = self._learn(buf, h)
            if s is None:
                return
        s.bytes_in += len(buf)
        self.on_media(s, buf, h)

    def _learn(self, buf: bytes, h: Any) -> InStream | None:
        """A stream the offer did not declare an SSRC for: by its mid, else by payload type."""
        s = None
        if self.mid_ext:
            mid = get_extension(buf, h, self.mid_ext)
            if mid:
                s = next((x for x in self.streams if x.mid == mid.decode(errors="replace")), None)
        if s is None:
            s = next((x for x in self.streams if x.codec.pt == h.pt and not x.ssrcs), None)
        if s is not None:
            s.ssrcs.add(h.ssrc)
            self.by_ssrc[h.ssrc] = s
        return s

    def _on_rtcp(self, buf: bytes) -> None:
        for p in iter_rtcp(buf):
            if p.pt == RTCP_SR:
                self.on_sender_report(p.data)

    def request_keyframe(self, stream: InStream) -> None:
        for ssrc in stream.ssrcs:
            self.transport.send_rtcp(build_pli(SERVER_SSRC, ssrc))

    def restart_ice(self, ufrag: str, pwd: str) -> tuple[str, str]:
        self.transport.set_remote(sdplib.SessionDescription(ice_ufrag=ufrag, ice_pwd=pwd))
        return self.transport.ice.local_ufrag, self.transport.ice.local_pwd

    def local_candidates(self) -> list[Any]:
        return self.transport.local_candidates()

    async def close(self) -> None:
        await self.transport.close()


class _WhipMixin:
    """What both WHIP session kinds share: the receiver, the HTTP-visible ids, the timeouts."""

    receiver: WhipReceiver
    etag: str
    stream_key: str
    answered_at: float

    def _whip_health(self: Any) -> None:
        now = time.monotonic()
        last = self.receiver.last_packet
        if not last and now - self.answered_at > CONNECT_TIMEOUT:
            self.fail("no media received")
        elif last and now - last > MEDIA_TIMEOUT:
            self.fail("media timeout")
        elif (self.receiver.transport.closed or self.receiver.transport.dtls.state == "closed") \
                and not self.stopping:
            self.spawn(self.stop(rules.INACTIVE))


class WhipSession(_WhipMixin, IngressSession):
    """Passthrough: the client's RTP is the room's RTP (its SSRCs, codecs and sender reports)."""

    input_type = rules.WHIP

    def __init__(self, manager: Any, info: Any, resource_id: str, receiver: WhipReceiver) -> None:
        super().__init__(manager, info, resource_id)
        self.receiver = receiver
        self.answered_at = time.monotonic()
        self.tracks: dict[str, Any] = {}  # mid -> LocalTrack
        receiver.on_media = self._on_media
        receiver.on_sender_report = self._on_sender_report

    def _on_media(self, s: InStream, buf: bytes, h: Any) -> None:
        pub = self.publisher
        if pub is None or pub.participant is None or self.stopping:
            return
        local = self.tracks.get(s.mid)
        if local is None:
            local = self._publish(s, h.ssrc)
        elif h.ssrc != local.ssrc:
            return  # a second SSRC in the section (simulcast, RTX): not forwarded
        local.write_rtp(buf)
        stats = self.video_stats if s.kind == "video" else self.audio_stats
        stats.bytes_in = s.bytes_in
        if s.kind == "video" and not stats.width:
            size = frame_size(s.codec.name, buf[h.payload_offset:])
            if size:
                stats.width, stats.height = size
        if self.state.status == rules.BUFFERING:
            self.publishing()

    def _publish(self, s: InStream, ssrc: int) -> Any:
        assert self.publisher is not None and self.publisher.participant is not None
        c = s.codec
        codec = TrackCodec(f"{s.kind}/{c.name}", c.clock_rate, c.channels, c.fmtp)
        if s.kind == "video":
            local = self.publisher.participant.publish_track(
                codec, self.plan.video_source, self.plan.video_name, ssrc=ssrc)
            local.on_keyframe_request = lambda: self.receiver.request_keyframe(s)
            self.video_stats.mime_type, self.video_stats.started = codec.mime, time.monotonic()
        else:
            stereo = "stereo=1" in c.fmtp.replace(" ", "")
            local = self.publisher.participant.publish_track(
                codec, self.plan.audio_source, self.plan.audio_name, ssrc=ssrc, stereo=stereo)
            local.track.audio_level_ext = s.audio_level_ext
            self.audio_stats.mime_type, self.audio_stats.started = codec.mime, time.monotonic()
            self.audio_stats.sample_rate, self.audio_stats.channels = c.clock_rate, c.channels or 2
        self.tracks[s.mid] = local
        return local

    def _on_sender_report(self, data: bytes) -> None:
        if self.publisher is not None and self.publisher.participant is not None:
            self.publisher.participant.on_publisher_rtcp(data)

    def on_keyframe_request(self, layer: int = -1) -> None:
        for s in self.receiver.streams:
            if s.kind == "video":
                self.receiver.request_keyframe(s)

    def _fill_state(self) -> None:
        if self.publisher is not None and self.publisher.participant is not None:
            tracks = [t.track.info for t in self.tracks.values()]
            super()._fill_state()
            del self.state.tracks[:]
            for info in tracks:
                copy = pm.TrackInfo()
                copy.CopyFrom(info)
                self.state.tracks.append(copy)
        else:
            super()._fill_state()

    async def close_media(self) -> None:
        await self.receiver.close()

    def check_health(self) -> None:
        self._whip_health()


class WhipTranscodingSession(_WhipMixin, TranscodingSession):
    """enable_transcoding: depacketize, decode and re-encode to the plan's layers, like RTMP."""

    input_type = rules.WHIP

    def __init__(self, manager: Any, info: Any, resource_id: str, receiver: WhipReceiver) -> None:
        super().__init__(manager, info, resource_id)
        self.receiver = receiver
        self.answered_at = time.monotonic()
        self.assemblers: dict[str, FrameAssembler] = {}
        self.t0 = time.monotonic()
        receiver.on_media = self._on_media

    def _on_media(self, s: InStream, buf: bytes, h: Any) -> None:
        if self.stopping or self.publisher is None:
            return
        name = s.codec.name.lower()
        asm = self.assemblers.get(s.mid)
        if asm is None:
            asm = self.assemblers[s.mid] = FrameAssembler(name)
            decoder = make_decoder(name)  # FFmpeg's native vp8 / h264 / opus decoders
            if s.kind == "video":
                self.start_video(decoder, f"video/{s.codec.name}")
                self.receiver.request_keyframe(s)
            else:
                self.start_audio(decoder, f"audio/{s.codec.name}")
                self.audio_stats.sample_rate, self.audio_stats.channels = s.codec.clock_rate, s.codec.channels or 2
        requests = asm.keyframe_requests
        frames = asm.push(h.seq, h.ts, bool(h.marker), buf[h.payload_offset:])
        if asm.keyframe_requests != requests:
            self.receiver.request_keyframe(s)
        stats = self.video_stats if s.kind == "video" else self.audio_stats
        stats.bytes_in = s.bytes_in
        for f in frames:
            if s.first_ts < 0:
                s.first_ts, s.first_arrival = f.timestamp, time.monotonic()
            # the stream's RTP clock, anchored where its first frame arrived on the session clock
            ticks = (f.timestamp - s.first_ts) & 0xFFFFFFFF
            if ticks >= 0x80000000:
                ticks -= 1 << 32
            tb = fractions.Fraction(1, s.codec.clock_rate)
            pts = ticks + int((s.first_arrival - self.t0) * s.codec.clock_rate)
            pkt = packet(f.data, pts, tb)
            if s.kind == "video" and self.video_tx is not None:
                self.video_tx.push(pkt, f.keyframe)
            elif s.kind == "audio" and self.audio_tx is not None:
                self.audio_tx.push(pkt)

    async def close_media(self) -> None:
        await super().close_media()
        await self.receiver.close()

    def check_health(self) -> None:
        self._whip_health()


def frame_size(codec: str, payload: bytes) -> tuple[int, int] | None:
    """Picture size from a VP8 keyframe's first packet (RFC 6386 §9.1) or an H.264 SPS
    (alone or in a STAP-A); None for any other packet."""
    from .depacketize import h264_nals, sps_size, vp8_payload

    if codec.upper() == "H264":
        for nal, start, end in h264_nals(payload):
            if start and end and nal and nal[0] & 0x1F == 7:
                return sps_size(nal)
        return None
    if codec.upper() != "VP8":
        return None
    data, start = vp8_payload(payload)
    if not start or len(data) < 10 or data[0] & 0x01 or data[3:6] != b"\x9d\x01\x2a":
        return None
    w = int.from_bytes(data[6:8], "little") & 0x3FFF
    h = int.from_bytes(data[8:10], "little") & 0x3FFF
    return (w, h) if w and h else None


class WhipEndpoint:
    """The HTTP side, mounted under the WHIP base URL's path on the server's HTTP port."""

    def __init__(self, manager: Any, rtc: Any, path: str) -> None:
        self.manager = manager
        self.rtc = rtc
        self.path = path.rstrip("/")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("//"):
            path = path[1:]
        rest = path[len(self.path):].strip("/")
        parts = [p for p in rest.split("/") if p] if rest else []
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=CORS)
        try:
            if request.method == "POST" and len(parts) <= 1:
                if parts:
                    key = parts[0]
                else:
                    key = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                return await self._create(request, key)
            if len(parts) == 2 and request.method == "DELETE":
                return await self._delete(parts[0], parts[1])
            if len(parts) == 2 and request.method == "PATCH":
                return await self._patch(request, parts[0], parts[1])
        except IngressError as e:
            return _error(e)
        return web.Response(status=405 if len(parts) <= 2 else 404, text="unsupported WHIP request",
                            headers=CORS)

    async def _create(self, request: web.Request, stream_key: str) -> web.StreamResponse:
        offer = (await request.read()).decode("utf-8", errors="replace")
        info = await self.manager.admit(stream_key, rules.WHIP)
        resource_id = ids.new_id(rules.RESOURCE_PREFIX[rules.WHIP])
        receiver = WhipReceiver(self.rtc, f"whip/{resource_id}")
        try:
            answer = await receiver.answer(offer)
        except BaseException:
            await receiver.close()
            raise
        transcode = rules.PublishPlan.of(info).transcode
        cls = WhipTranscodingSession if transcode else WhipSession
        session = cls(self.manager, info, resource_id, receiver)
        session.etag = f"{zlib.crc32(offer.encode()):08x}"
        session.stream_key = stream_key
        try:
            await self.manager.start_session(session)
        except BaseException:
            if not session.stopping:  # refused before it began (capacity): release the transport
                await receiver.close()
            raise
        location = f"{self.path}/{stream_key}/{resource_id}"
        log.info("whip_session_created", ingress_id=info.ingress_id, resource_id=resource_id,
                 transcoding=transcode, streams=",".join(f"{s.kind}:{s.codec.name}" for s in receiver.streams))
        headers = dict(CORS)
        headers.update({"Location": location, "ETag": session.etag, "Content-Type": "application/sdp"})
        return web.Response(status=201, body=answer.encode(), headers=headers)

    def _session(self, stream_key: str, resource_id: str) -> Any:
        session = self.manager.session_for_resource(resource_id)
        if session is None or getattr(session, "stream_key", None) != stream_key:
            raise IngressError("not_found", "ingress not found")
        return session

    async def _delete(self, stream_key: str, resource_id: str) -> web.StreamResponse:
        session = self._session(stream_key, resource_id)
        log.info("whip_delete", resource_id=resource_id)
        await session.stop(rules.INACTIVE)
        return web.Response(status=200, headers={"Access-Control-Allow-Origin": "*"})

    async def _patch(self, request: web.Request, stream_key: str, resource_id: str) -> web.StreamResponse:
        session = self._session(stream_key, resource_id)
        if_match = request.headers.get("If-Match", "")
        if if_match and if_match != "*" and if_match.strip('"') != session.etag:
            return web.Response(status=412, text="ETag does not match", headers=CORS)
        body = (await request.read()).decode("utf-8", errors="replace")
        ufrag = pwd = ""
        for line in body.splitlines():
            line = line.strip()
            if line.startswith("a=ice-ufrag:"):
                ufrag = line.split(":", 1)[1]
            elif line.startswith("a=ice-pwd:"):
                pwd = line.split(":", 1)[1]
        if not ufrag or not pwd:
            raise IngressError("invalid_argument", "whip restart request was invalid")
        receiver: WhipReceiver = session.receiver
        if ufrag == receiver.transport.ice.remote_ufrag:
            return web.Response(status=204, headers=CORS)  # trickle: ICE-lite needs no candidates
        local_ufrag, local_pwd = receiver.restart_ice(ufrag, pwd)
        session.etag = f"{zlib.crc32(body.encode()):08x}"
        lines = [f"a=ice-ufrag:{local_ufrag}", f"a=ice-pwd:{local_pwd}"]
        lines += [f"a=candidate:{c.to_sdp()}" for c in receiver.local_candidates()]
        lines.append("a=end-of-candidates")
        headers = dict(CORS)
        headers.update({"Content-Type": "application/trickle-ice-sdpfrag", "ETag": session.etag})
        return web.Response(status=200, text="\r\n".join(lines) + "\r\n", headers=headers)

    async def stop(self) -> None:
        return


def _error(e: IngressError) -> web.Response:
    return web.Response(status=HTTP_STATUS.get(e.code, 500), text=e.message, headers=CORS)


__all__ = ["WhipEndpoint", "WhipReceiver", "WhipSession", "WhipTranscodingSession"]
