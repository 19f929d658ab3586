"""The ingress participant: joins the room, publishes its tracks, paces encoded frames as RTP.

Encoded frames arrive (on the event loop) with a time on the session's media clock; a pacer
sends each at `anchor + time + PLAYOUT_DELAY` wallclock, so audio and video leave in step and
smoothly even when the transcoders deliver in bursts. Sender reports map RTP time to that same
wallclock for lip sync. A live source (RTMP, WHIP) keeps the anchor at the earliest arrival seen
(`arrival - time`, lowered whenever a frame comes earlier), so a slow start is never baked into
the latency; a file source (URL input) keeps its first anchor, which holds a reader running
ahead to real time. The pacer is bounded: frames later than `MAX_LATE` re-anchor the clock (a
stall is not replayed in a burst), frames further ahead than `MAX_AHEAD` re-anchor it the other
way, and at most `MAX_QUEUED` frames wait.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livekit.protocol import models as pm

from ..logs import get_logger
from ..rtc.local import LocalParticipant, LocalTrack
from ..rtc.negotiation import TrackCodec
from ..rtc.rtp import build_sr, ntp_now
from .packetize import RtpPacketizer
from .transcode import EncodedFrame

log = get_logger("lkserver.ingress.publish")

PLAYOUT_DELAY = 0.1
MAX_LATE = 0.5
MAX_AHEAD = 3.0
MAX_QUEUED = 600
SR_INTERVAL = 1.0

H264_FMTP = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"


@dataclass
class OutTrack:
    """One published stream: the LocalTrack, its packetizer and RTP clock."""

    local: LocalTrack
    packetizer: RtpPacketizer
    clock_rate: int
    ts_base: int = field(default_factory=lambda: random.getrandbits(32))
    sent_any: bool = False

    def rtp_ts(self, t: float) -> int:
        return (self.ts_base + round(t * self.clock_rate)) & 0xFFFFFFFF


class IngressPublisher:
    """The ingress's participant and its tracks; every method runs on the event loop."""

    def __init__(self, rtc: Any, room: str, identity: str, *, name: str = "", metadata: str = "",
                 attributes: dict[str, str] | None = None, live: bool = True) -> None:
        self.rtc = rtc
        self.live = live
        self.room_name = room
        self.identity = identity
        self.name = name
        self.metadata = metadata
        self.attributes = attributes or {}
        self.participant: LocalParticipant | None = None
        self.video: list[OutTrack] = []  # by layer
        self.audio: OutTrack | None = None
        self.on_keyframe_request: Callable[[int], None] = lambda layer: None  # -1: every layer
        self._heap: list[tuple[float, int, EncodedFrame]] = []
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._anchor: float | None = None  # monotonic time of media time 0 (before the delay)
        self._wall_offset = time.time() - time.monotonic()
        self._task: asyncio.Task | None = None
        self._sr_task: asyncio.Task | None = None
        self.frames_sent = 0
        self.frames_dropped = 0

    @property
    def room_sid(self) -> str:
        return self.participant.room.sid if self.participant is not None else ""

    @property
    def gone(self) -> bool:
        """The room removed the participant (RemoveParticipant, DeleteRoom, a duplicate identity)."""
        return self.participant is not None and self.participant.closed

    async def join(self) -> None:
        self.participant = await LocalParticipant.join(
            self.rtc, self.room_name, self.identity, name=self.name, metadata=self.metadata,
            kind=pm.ParticipantInfo.Kind.INGRESS, attributes=self.attributes, can_subscribe=False)
        self._task = asyncio.ensure_future(self._run())
        self._sr_task = asyncio.ensure_future(self._sender_reports())

    def add_video(self, codec: str, layers: list[pm.VideoLayer], name: str, source: int,
                  fmtp: str = "") -> None:
        """Publish the video track with its layers (largest first) as simulcast streams, one
        SSRC per layer, each announced in TrackInfo.layers with its quality."""
        p = self.participant
        assert p is not None
        top = layers[0]
        if codec == "vp8":
            track_codec = TrackCodec("video/VP8", 90000)
        else:
            track_codec = TrackCodec("video/H264", 90000, fmtp=fmtp or H264_FMTP)
        local = p.publish_track(track_codec, source, name, width=top.width, height=top.height)
        info = local.track.info
        if not isinstance(local.track.ssrcs, dict):
            layers = layers[:1]  # a forwarding core without simulcast layers: the top layer only
        del info.layers[:]
        ssrcs = [local.ssrc] + [p.new_ssrc() for _ in layers[1:]]
        for layer in layers:
            info.layers.append(pm.VideoLayer(quality=layer.quality, width=layer.width, height=layer.height,
                                             bitrate=layer.bitrate))
        info.simulcast = len(layers) > 1
        if isinstance(local.track.ssrcs, dict):
            local.track.ssrcs.clear()
            for layer, ssrc in zip(layers, ssrcs):
                local.track.ssrcs[ssrc] = layer.quality if len(layers) > 1 else 0
        for i, ssrc in enumerate(ssrcs):
            p.loopback.keyframe_requests[ssrc] = lambda i=i: self.on_keyframe_request(i)
        ts_base = random.getrandbits(32)  # one RTP clock for every layer of the track
        self.video = [OutTrack(local, RtpPacketizer(ssrc, local.pt, 90000, track_codec.name), 90000, ts_base)
                      for ssrc in ssrcs]

    def add_audio(self, channels: int, name: str, source: int, disable_dtx: bool = False) -> None:
        assert self.participant is not None
        local = self.participant.publish_track(TrackCodec("audio/opus", 48000, 2), source, name,
                                               stereo=channels == 2)
        local.track.info.disable_dtx = disable_dtx
        self.audio = OutTrack(local, RtpPacketizer(local.ssrc, local.pt, 48000, "opus"), 48000)

    @property
    def pending(self) -> int:
        """Frames waiting for their send time."""
        return len(self._heap)

    @property
    def layer_count(self) -> int:
        return len(self.video)

    def published_tracks(self) -> list[pm.TrackInfo]:
        tracks = [t.local.track.info for t in self.video[:1]]
        if self.audio is not None:
            tracks.append(self.audio.local.track.info)
        out = []
        for info in tracks:
            copy = pm.TrackInfo()
            copy.CopyFrom(info)
            out.append(copy)
        return out

    # -- pacing ------------------------------------------------------------------------------------

    def push(self, frame: EncodedFrame) -> None:
        """An encoded frame from a transcoder (call on the event loop)."""
        if frame.kind == "video" and frame.layer >= len(self.video):
            return  # a layer the room does not take
        now = time.monotonic()
        offset = now - frame.time
        if self._anchor is None or (self.live and offset < self._anchor):
            self._anchor = offset
        due = self._anchor + frame.time + PLAYOUT_DELAY
        if due < now - MAX_LATE or due > now + MAX_AHEAD:
            # the source stalled or ran ahead: re-anchor instead of bursting or holding frames
            log.debug("ingress_pacer_reanchor", identity=self.identity, offset=round(due - now, 3))
            self._anchor = now - frame.time
            due = now + PLAYOUT_DELAY
        if len(self._heap) >= MAX_QUEUED:
            self.frames_dropped += 1
            return
        heapq.heappush(self._heap, (due, next(self._order), frame))
        self._wake.set()

    def send_now(self, frame: EncodedFrame) -> None:
        track = self.audio if frame.kind == "audio" else self.video[frame.layer]
        if track is None:
            return
        packets = track.packetizer.packetize(frame.data, track.rtp_ts(frame.time))
        track.sent_any = True
        for p in packets:
            track.local.write_rtp(p)
        self.frames_sent += 1

    async def _run(self) -> None:
        heap = self._heap
        while True:
            if not heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            due = heap[0][0]
            delay = due - time.monotonic()
            if delay > 0.002:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                continue
            _, _, frame = heapq.heappop(heap)
            try:
                self.send_now(frame)
            except Exception:
                log.exception("ingress_send_failed", identity=self.identity)

    async def _sender_reports(self) -> None:
        while True:
            await asyncio.sleep(SR_INTERVAL)
            p = self.participant
            if p is None or p.closed or self._anchor is None:
                continue
            now = time.monotonic()
            media_time = now - self._anchor - PLAYOUT_DELAY
            ntp = ntp_now(now + self._wall_offset)
            for track in self.video + ([self.audio] if self.audio else []):
                if track is None or not track.sent_any:
                    continue
                pk = track.packetizer
                p.on_publisher_rtcp(build_sr(pk.ssrc, ntp, track.rtp_ts(media_time), pk.packets, pk.octets))

    async def close(self) -> None:
        for task in (self._task, self._sr_task):
            if task is not None:
                task.cancel()
        self._heap.clear()
        if self.participant is not None and not self.participant.closed:
            await self.participant.leave()
