"""The forwarding core (sans-I/O): published streams in, one rewritten stream per subscriber out.

A TrackReceiver holds a published track's RTP streams, one UpTrack per simulcast layer
(spatial 0 = q/LOW, 1 = h/MEDIUM, 2 = f/HIGH). Each subscriber has a DownTrack that forwards one
layer at a time, rewriting SSRC, payload type, sequence number and timestamp, and for VP8 the
picture id, TL0PICIDX and KEYIDX, so that a layer switch - made only on a keyframe of the new
layer - looks like one continuous stream (livekit pkg/sfu/forwarder.go, rtpmunger.go,
codecmunger/vp8.go; reference sfu-quality.md §8). Padding-only packets are dropped without
leaving a hole. Each video DownTrack keeps its recent packets so a subscriber's NACK can be
answered with RTX (RFC 4588), at most 3 times per packet. No queues: forwarding is a
synchronous call chain from the publisher's socket to the subscribers' sockets.
"""

from __future__ import annotations

import random
import struct
import time
from typing import Callable, Optional

from .quality import LossWindow
from .rtp import (
    RTP_HEADER,
    U16,
    ReportBlock,
    RtpHeader,
    SenderReport,
    build_sr,
    get_extension,
    parse_rtp,
    ntp_middle,
    payload_size,
    red_primary,
    rewrite,
)

SendFn = Callable[[bytes], None]

LOW, MEDIUM, HIGH = 0, 1, 2
MAX_LAYERS = 3
RID_LAYER = {"q": LOW, "h": MEDIUM, "f": HIGH}
KEYFRAME_THROTTLE = 0.5  # per layer, as LiveKit throttles PLIs to a publisher
# NACKs to publishers (LiveKit's nack queue): a missing packet is asked for up to 3 times, 100 ms
# apart, for at most a second; gaps wider than 100 packets are left to a keyframe
NACK_TRIES = 3
NACK_RETRY = 0.1
NACK_MAX_AGE = 1.0
NACK_MAX_GAP = 100
NACK_MAX_MISSING = 256
HISTORY = 256  # packets a video DownTrack can retransmit (about 1 s of 720p)
RTX_MAX_TRIES = 3
RTX_MIN_INTERVAL = 0.1
LAYER_IDLE = 1.5  # a layer with no packets for this long is treated as paused by its publisher


def vp8_is_keyframe(payload: bytes) -> bool:
    """RFC 7741: start of partition 0 with the P bit of the VP8 frame header clear."""
    d = vp8_descriptor(payload)
    return d is not None and d[0] and d[5] < len(payload) and not (payload[d[5]] & 0x01)


def vp8_descriptor(payload: bytes) -> Optional[tuple[bool, int, int, int, int, int]]:
    """(start of partition 0, picture id offset, picture id length (0/1/2), TL0PICIDX offset,
    TID/KEYIDX offset, offset of the VP8 payload); offsets are 0 when the field is absent."""
    n = len(payload)
    if n < 1:
        return None
    b0 = payload[0]
    start = bool(b0 & 0x10) and not (b0 & 0x07)
    pos = 1
    pid_pos = pid_len = tl0_pos = tk_pos = 0
    if b0 & 0x80:
        if n < 2:
            return None
        x = payload[1]
        pos = 2
        if x & 0x80:
            if pos >= n:
                return None
            pid_pos = pos
            pid_len = 2 if payload[pos] & 0x80 else 1
            pos += pid_len
        if x & 0x40:
            tl0_pos = pos
            pos += 1
        if x & 0x30:
            tk_pos = pos
            pos += 1
    if pos > n:
        return None
    return start, pid_pos, pid_len, tl0_pos, tk_pos, pos


def h264_is_keyframe(payload: bytes) -> bool:
    """RFC 6184: an SPS or IDR NAL unit, alone, in a STAP-A, or starting a FU-A."""
    if not payload:
        return False
    nal = payload[0] & 0x1F
    if nal in (5, 7):
        return True
    if nal == 24:  # STAP-A
        pos = 1
        while pos + 2 < len(payload):
            size = (payload[pos] << 8) | payload[pos + 1]
            if size == 0 or pos + 2 >= len(payload):
                break
            if payload[pos + 2] & 0x1F in (5, 7):
                return True
            pos += 2 + size
        return False
    if nal == 28 and len(payload) > 1:  # FU-A
        return bool(payload[1] & 0x80) and payload[1] & 0x1F in (5, 7)
    return False


KEYFRAME_DETECTORS: dict[str, Callable[[bytes], bool]] = {
    "vp8": vp8_is_keyframe,
    "h264": h264_is_keyframe,
}


class UpTrack:
    """One RTP stream a publisher sends (one SSRC: a track, or one simulcast layer of it)."""

    def __init__(self, track_sid: str, ssrc: int, codec_name: str, clock_rate: int, is_video: bool,
                 request_keyframe: Callable[[], None], audio_level_ext: int = 0, layer: int = 0,
                 rid: str = "") -> None:
        self.track_sid = track_sid
        self.ssrc = ssrc
        self.codec_name = codec_name.lower()
        self.clock_rate = clock_rate
        self.is_video = is_video
        self.keyframe = KEYFRAME_DETECTORS.get(self.codec_name)
        self.request_keyframe = request_keyframe
        self.audio_level_ext = audio_level_ext
        self.layer = layer
        self.rid = rid
        self.pt = 0  # the payload type it arrives with (retransmissions are restored to it)
        self.downs: list[DownTrack] = []
        self.on_audio_level: Optional[Callable[[int], None]] = None
        # receive statistics (RFC 3550 A.1, A.3, A.8)
        self.packets = 0
        self.bytes = 0
        self.base_seq = -1
        self.max_seq = 0
        self.cycles = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0
        self.quality_loss = LossWindow()  # connection-quality windows, apart from our RR intervals
        self.last_transit: Optional[float] = None
        self.last_sr: Optional[SenderReport] = None
        self.last_sr_received = 0.0
        self.first_packet_at = 0.0
        self.last_packet_at = 0.0
        self.bitrate = 0.0  # bits/s over the last rate window
        self._rate_bytes = 0
        self._rate_since = 0.0
        # loss repair upstream: sequence numbers we NACK the publisher for
        self.nack_enabled = False
        self.missing: dict[int, list[float]] = {}  # seq -> [next NACK at, tries, first missed at]
        self.nacks_sent = 0
        self.repaired = 0

    def on_rtp(self, buf: bytes, h: RtpHeader, arrival: float) -> None:
        self.packets += 1
        size = len(buf)
        self.bytes += size
        self._rate_bytes += size
        self.last_packet_at = arrival
        seq = h.seq
        in_order = True
        if self.base_seq < 0:
            self.base_seq = self.max_seq = seq
            self.first_packet_at = self._rate_since = arrival
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if delta > 1 and self.nack_enabled:
                    self._missed(self.max_seq + 1, delta - 1, arrival)
                if seq < self.max_seq:
                    self.cycles += 0x10000
                self.max_seq = seq
            else:
                in_order = False
                if self.missing and self.missing.pop(seq, None) is not None:
                    self.repaired += 1
        if arrival - self._rate_since >= 1.0:
            rate = self._rate_bytes * 8 / (arrival - self._rate_since)
            # smoothed: keyframes make single windows swing several-fold
            self.bitrate = rate if not self.bitrate else 0.7 * self.bitrate + 0.3 * rate
            self._rate_bytes, self._rate_since = 0, arrival
        if in_order:  # late and repaired packets say nothing about the path's jitter
            transit = arrival * self.clock_rate - h.ts
            if self.last_transit is not None:
                d = abs(transit - self.last_transit)
                self.jitter += (d - self.jitter) / 16
            self.last_transit = transit
        if self.audio_level_ext and self.on_audio_level is not None:
            level = get_extension(buf, h, self.audio_level_ext)
            if level:
                self.on_audio_level(level[0] & 0x7F)
        for d in self.downs:
            d.forward(buf, h, self)

    def on_repair(self, buf: bytes, h: RtpHeader, arrival: float) -> None:
        """A retransmission (unwrapped from RTX): forwarded if we were still missing it."""
        if h.seq in self.missing:
            self.on_rtp(buf, h, arrival)  # out of order: counted as repaired there

    def _missed(self, first: int, count: int, now: float) -> None:
        if count > NACK_MAX_GAP:
            return  # too much to repair packet by packet: the subscribers' PLIs bring a keyframe
        for i in range(count):
            self.missing[(first + i) & 0xFFFF] = [now, 0, now]
        while len(self.missing) > NACK_MAX_MISSING:
            del self.missing[next(iter(self.missing))]

    def nacks_due(self, now: float) -> list[int]:
        """Sequence numbers to NACK now (oldest first); forgets those asked for too often or too long."""
        due = []
        for seq, entry in list(self.missing.items()):
            if entry[1] >= NACK_TRIES or now - entry[2] > NACK_MAX_AGE:
                del self.missing[seq]
            elif now >= entry[0]:
                due.append(seq)
                entry[0] = now + NACK_RETRY
                entry[1] += 1
        self.nacks_sent += len(due)
        return due

    def active(self, now: float) -> bool:
        return self.packets > 0 and now - self.last_packet_at < LAYER_IDLE

    def on_sender_report(self, sr: SenderReport, now: float) -> None:
        self.last_sr = sr
        self.last_sr_received = now
        for d in self.downs:
            if d.current is self:
                d.send_sender_report(sr)

    def loss_counts(self) -> tuple[int, int]:
        """(expected, lost) packets since the stream began."""
        if self.base_seq < 0:
            return 0, 0
        expected = self.cycles + self.max_seq - self.base_seq + 1
        return expected, max(expected - self.packets, 0)

    def report_block(self, now: float) -> ReportBlock | None:
        if self.base_seq < 0:
            return None
        extended_max = self.cycles + self.max_seq
        expected = extended_max - self.base_seq + 1
        lost = expected - self.packets
        expected_interval = expected - self.expected_prior
        received_interval = self.packets - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.packets
        lost_interval = expected_interval - received_interval
        fraction = 0 if expected_interval <= 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        lsr = dlsr = 0
        if self.last_sr is not None:
            lsr = ntp_middle(self.last_sr.ntp)
            dlsr = int((now - self.last_sr_received) * 65536)
        return ReportBlock(self.ssrc, min(fraction, 255), lost, extended_max, int(self.jitter), lsr, dlsr)


class TrackReceiver:
    """A published track's streams: one UpTrack per simulcast layer, and its subscribers."""

    def __init__(self, track_sid: str, codec_name: str, clock_rate: int, is_video: bool,
                 send_pli: Callable[[int], None], audio_level_ext: int = 0) -> None:
        self.track_sid = track_sid
        self.codec_name = codec_name.lower()
        self.clock_rate = clock_rate
        self.is_video = is_video
        self.send_pli = send_pli
        self.audio_level_ext = audio_level_ext
        self.layers: list[Optional[UpTrack]] = [None] * MAX_LAYERS
        self.downs: list[DownTrack] = []
        self.last_pli = [0.0] * MAX_LAYERS
        self.on_layers_changed: Callable[[], None] = lambda: None

    def add_layer(self, ssrc: int, layer: int = 0, rid: str = "") -> UpTrack:
        layer = max(0, min(layer, MAX_LAYERS - 1))
        up = UpTrack(self.track_sid, ssrc, self.codec_name, self.clock_rate, self.is_video,
                     lambda: self.request_keyframe(layer), self.audio_level_ext, layer, rid)
        self.layers[layer] = up
        for d in self.downs:
            d.select()
        self.on_layers_changed()
        return up

    @property
    def primary(self) -> Optional[UpTrack]:
        """The first stream that arrived (audio, or the lowest simulcast layer)."""
        return next((u for u in self.layers if u is not None), None)

    def request_keyframe(self, layer: int = -1) -> None:
        """Ask the publisher for a keyframe on a layer (every layer when -1), throttled per layer."""
        now = time.monotonic()
        for i, up in enumerate(self.layers):
            if up is None or (layer >= 0 and i != layer):
                continue
            if now - self.last_pli[i] >= KEYFRAME_THROTTLE:
                self.last_pli[i] = now
                self.send_pli(up.ssrc)

    def active_layers(self, now: float) -> list[int]:
        return [i for i, up in enumerate(self.layers) if up is not None and up.active(now)]

    def subscribe(self, down: "DownTrack") -> None:
        self.downs.append(down)
        down.select()

    def unsubscribe(self, down: "DownTrack") -> None:
        if down in self.downs:
            self.downs.remove(down)
        down.unbind()


class DownTrack:
    """One subscriber's copy of a track: its own SSRC, PT, sequence/time bases and layer."""

    def __init__(self, receiver: TrackReceiver, subscriber_sid: str, ssrc: int, pt: int,
                 send_rtp: SendFn, send_rtcp: SendFn, rtx_ssrc: int = 0, rtx_pt: int = 0) -> None:
        self.receiver = receiver
        self.subscriber_sid = subscriber_sid
        self.ssrc = ssrc
        self.pt = pt
        self.rtx_ssrc = rtx_ssrc
        self.rtx_pt = rtx_pt
        self.send_rtp = send_rtp
        self.send_rtcp = send_rtcp
        self.paused = False  # not forwarding: disabled by the subscriber, or by the allocator
        self.disabled = False  # the subscriber disabled the track (UpdateTrackSettings)
        self.bandwidth_paused = False  # the stream allocator paused it (subscriber_allow_pause)
        self.max_layer = HIGH  # what the subscriber's view asks for
        self.bandwidth_layer = HIGH  # what the subscriber's link allows (stream allocator)
        self.current: Optional[UpTrack] = None  # the layer being forwarded
        self.target: Optional[UpTrack] = None  # the layer we want, switched to on its keyframe
        self.bound: list[UpTrack] = []
        self.started = False
        self.seq_offset = 0
        self.ts_offset = random.getrandbits(32)
        self.next_seq = random.getrandbits(15)
        self.last_out_seq = -1
        self.last_out_ts = 0
        self.last_out_at = 0.0
        self.switch_seq = 0  # packets of `current` before this input sequence number are dropped
        self.switches = 0
        # VP8 descriptor rewriting, active after the first layer switch
        self.vp8 = receiver.codec_name == "vp8"
        self.munge = False
        self.pid_offset = self.tl0_offset = self.keyidx_offset = 0
        self.last_pid = self.last_tl0 = self.last_keyidx = -1
        self.packets_sent = 0
        self.octets_sent = 0
        self.retransmits = 0
        self.first_sent_at = 0.0
        self.on_first_packet: Optional[Callable[[], None]] = None
        self.on_layer_switch: Optional[Callable[[int], None]] = None
        # forwarding (re)started at a keyframe after not forwarding: the first one, or after a
        # pause (LiveKit's "resuming", which sends StreamStateUpdate ACTIVE)
        self.on_resume: Optional[Callable[[], None]] = None
        self.history: Optional[list] = [None] * HISTORY if receiver.is_video else None
        self.rtx_seq = random.getrandbits(15)
        self.ext_fn: Optional[Callable[[], bytes]] = None  # builds the header extensions we add
        # the publisher sends RED and this subscriber takes plain opus: forward the primary block
        self.red_primary = False
        # what the subscriber's receiver reports say about this stream
        self.remote_loss = 0.0
        self.remote_jitter = 0
        self.remote_counts: Optional[tuple[int, int]] = None  # (highest seq, cumulative lost) of the last RR
        self.quality_loss = LossWindow()

    # -- layer selection -----------------------------------------------------------------------

    def desired_layer(self) -> int:
        return min(self.max_layer, self.bandwidth_layer)

    def select(self) -> None:
        """Pick the target stream for the desired layer from what the publisher sends."""
        r = self.receiver
        now = time.monotonic()
        want = self.desired_layer()
        candidates = [u for u in r.layers if u is not None]
        active = [u for u in candidates if u.active(now)] or candidates
        if not active:
            return
        below = [u for u in active if u.layer <= want]
        target = max(below, key=lambda u: u.layer) if below else min(active, key=lambda u: u.layer)
        if target is not self.target:
            self.target = target
            self._bind()
            if target is not self.current and r.is_video:
                r.request_keyframe(target.layer)

    def _bind(self) -> None:
        wanted = [u for u in (self.current, self.target) if u is not None]
        for up in self.bound:
            if up not in wanted and self in up.downs:
                up.downs.remove(self)
        for up in wanted:
            if self not in up.downs:
                up.downs.append(self)
        self.bound = wanted

    def unbind(self) -> None:
        for up in self.bound:
            if self in up.downs:
                up.downs.remove(self)
        self.bound = []

    # -- forwarding ----------------------------------------------------------------------------

    def forward(self, buf: bytes, h: RtpHeader, up: UpTrack) -> None:
        if self.paused:
            return
        if up is not self.current:
            if up is not self.target:
                return
            if up.is_video and up.keyframe is not None and not up.keyframe(buf[h.payload_offset:]):
                # waiting to switch: keep asking (throttled per layer) until a keyframe comes
                up.request_keyframe()
                return
            self._switch(buf, h, up)
        elif ((h.seq - self.switch_seq) & 0xFFFF) >= 0x8000:
            return  # a late (repaired) packet from before the switch: its number is taken
        out_seq = (h.seq + self.seq_offset) & 0xFFFF
        size = len(buf) - h.payload_offset
        if h.padding and size and size <= buf[-1]:
            # padding only (a bandwidth probe): drop it and close the gap it would leave
            if self.last_out_seq < 0 or ((out_seq - self.last_out_seq) & 0xFFFF) < 0x8000:
                self.seq_offset -= 1
            return
        out_ts = (h.ts + self.ts_offset) & 0xFFFFFFFF
        if ((out_seq - self.last_out_seq) & 0xFFFF) < 0x8000 or self.last_out_seq < 0:
            self.last_out_seq = out_seq
            self.last_out_ts = out_ts
            self.last_out_at = time.monotonic()
            if ((h.seq - self.switch_seq) & 0xFFFF) > 0x2000:
                self.switch_seq = (h.seq - 0x1000) & 0xFFFF  # trails behind; far older packets are void
        self.packets_sent += 1
        self.octets_sent += size
        ext = self.ext_fn() if self.ext_fn is not None else b""
        if self.red_primary:
            end = len(buf) - (buf[-1] if h.padding else 0)
            found = red_primary(buf[h.payload_offset:end])
            if found is None:
                return
            packet = rewrite(buf, h, self.pt, out_seq, out_ts, self.ssrc, ext,
                             bytes(buf[h.payload_offset + found[1]:end]))
        else:
            packet = rewrite(buf, h, self.pt, out_seq, out_ts, self.ssrc, ext)
        if self.munge:
            packet = self._munge_vp8(packet, len(packet) - size)
        if self.history is not None:
            self.history[out_seq % HISTORY] = [out_seq, packet, 0, 0.0]
        self.send_rtp(packet)

    def _switch(self, buf: bytes, h: RtpHeader, up: UpTrack) -> None:
        """Start forwarding `up` at this keyframe, continuing our sequence and time lines."""
        previous = self.current
        now = time.monotonic()
        if previous is None and not self.started:
            self.seq_offset = self.next_seq - h.seq
            self.started = True
            self.first_sent_at = now
            if self.on_first_packet is not None:
                self.on_first_packet()
        else:
            self.seq_offset = (self.last_out_seq + 1) - h.seq
            ts = self._mapped_ts(previous, up, h.ts, now)
            self.ts_offset = (ts - h.ts) & 0xFFFFFFFF
            self.switches += 1
            if self.vp8:
                self._vp8_continue(buf[h.payload_offset:])
        self.current = up
        self.switch_seq = h.seq
        self._bind()
        if self.on_layer_switch is not None:
            self.on_layer_switch(up.layer)
        if previous is None and self.on_resume is not None:
            self.on_resume()

    def _mapped_ts(self, previous: Optional[UpTrack], up: UpTrack, ts: int, now: float) -> int:
        """The outgoing timestamp for `ts` of `up`, in our running timeline (LiveKit maps it
        through both layers' sender reports; without them, elapsed wall time is used)."""
        clock = up.clock_rate
        expected = (self.last_out_ts + max(1, int((now - self.last_out_at) * clock))) & 0xFFFFFFFF
        if previous is not None and previous.last_sr is not None and up.last_sr is not None:
            a, b = previous.last_sr, up.last_sr
            ntp_diff = ((b.ntp - a.ntp) / float(1 << 32))
            in_prev_timeline = (ts - b.rtp_ts + a.rtp_ts + int(ntp_diff * clock)) & 0xFFFFFFFF
            mapped = (in_prev_timeline + self.ts_offset) & 0xFFFFFFFF
            behind = (self.last_out_ts - mapped) & 0xFFFFFFFF
            if behind < 0x80000000 and behind > clock // 20:
                return expected  # more than 50 ms behind: not a usable mapping
            if behind < 0x80000000:
                return (self.last_out_ts + 1) & 0xFFFFFFFF
            return mapped
        return expected

    def _vp8_continue(self, payload: bytes) -> None:
        """Offsets so the new layer's picture ids continue ours (codecmunger/vp8.go)."""
        if not self.munge:
            self._vp8_last_sent()
        d = vp8_descriptor(payload)
        if d is None:
            return
        _, pid_pos, pid_len, tl0_pos, tk_pos, _ = d
        if pid_len and self.last_pid >= 0:
            pid = payload[pid_pos] & 0x7F if pid_len == 1 else ((payload[pid_pos] & 0x7F) << 8) | payload[pid_pos + 1]
            self.pid_offset = pid - self.last_pid - 1
        if tl0_pos and self.last_tl0 >= 0:
            self.tl0_offset = payload[tl0_pos] - self.last_tl0 - 1
        if tk_pos and self.last_keyidx >= 0:
            self.keyidx_offset = (payload[tk_pos] & 0x1F) - self.last_keyidx - 1
        self.munge = True

    def _vp8_last_sent(self) -> None:
        """Before the first switch nothing is rewritten: read the last ids from what we sent."""
        if self.history is None or self.last_out_seq < 0:
            return
        entry = self.history[self.last_out_seq % HISTORY]
        if entry is None:
            return
        packet = entry[1]
        h = parse_rtp(packet)
        if h is None:
            return
        payload = packet[h.payload_offset:]
        d = vp8_descriptor(payload)
        if d is None:
            return
        _, pid_pos, pid_len, tl0_pos, tk_pos, _ = d
        if pid_len == 2:
            self.last_pid = ((payload[pid_pos] & 0x7F) << 8) | payload[pid_pos + 1]
        elif pid_len == 1:
            self.last_pid = payload[pid_pos] & 0x7F
        if tl0_pos:
            self.last_tl0 = payload[tl0_pos]
        if tk_pos:
            self.last_keyidx = payload[tk_pos] & 0x1F

    def _munge_vp8(self, packet: bytes, payload_offset: int) -> bytes:
        payload = memoryview(packet)[payload_offset:]
        d = vp8_descriptor(payload)
        if d is None:
            return packet
        _, pid_pos, pid_len, tl0_pos, tk_pos, _ = d
        out = bytearray(packet)
        if pid_len == 2:
            pid = (((payload[pid_pos] & 0x7F) << 8) | payload[pid_pos + 1]) - self.pid_offset
            pid &= 0x7FFF
            out[payload_offset + pid_pos] = 0x80 | (pid >> 8)
            out[payload_offset + pid_pos + 1] = pid & 0xFF
            self.last_pid = pid
        elif pid_len == 1:
            pid = ((payload[pid_pos] & 0x7F) - self.pid_offset) & 0x7F
            out[payload_offset + pid_pos] = pid
            self.last_pid = pid
        if tl0_pos:
            tl0 = (payload[tl0_pos] - self.tl0_offset) & 0xFF
            out[payload_offset + tl0_pos] = tl0
            self.last_tl0 = tl0
        if tk_pos:
            keyidx = ((payload[tk_pos] & 0x1F) - self.keyidx_offset) & 0x1F
            out[payload_offset + tk_pos] = (payload[tk_pos] & 0xE0) | keyidx
            self.last_keyidx = keyidx
        return bytes(out)

    def pause(self, bandwidth: bool = False) -> None:
        """Stop forwarding: the subscriber disabled the track, or (`bandwidth`) the allocator."""
        if bandwidth:
            self.bandwidth_paused = True
        else:
            self.disabled = True
        self.paused = True

    def resume(self, bandwidth: bool = False) -> None:
        """Lift one reason to pause; with none left continue at a new keyframe, with no hole in
        the sequence numbers."""
        if bandwidth:
            self.bandwidth_paused = False
        else:
            self.disabled = False
        if not self.paused or self.disabled or self.bandwidth_paused:
            return
        self.paused = False
        if self.current is not None:
            # rejoin through a keyframe of the target layer, continuing our sequence numbers
            self.current = None
            self.select()
            if self.target is not None:
                self.receiver.request_keyframe(self.target.layer)

    # -- RTCP ------------------------------------------------------------------------------------

    def send_sender_report(self, sr: SenderReport) -> None:
        if not self.started or self.packets_sent == 0:
            return
        self.send_rtcp(build_sr(self.ssrc, sr.ntp, sr.rtp_ts + self.ts_offset, self.packets_sent, self.octets_sent))

    def retransmit(self, seqs: list[int], now: float) -> int:
        """Answer a NACK from the subscriber; returns how many packets went out again."""
        if self.history is None:
            return 0
        sent = 0
        for seq in seqs:
            entry = self.history[seq % HISTORY]
            if entry is None or entry[0] != seq or entry[2] >= RTX_MAX_TRIES or now - entry[3] < RTX_MIN_INTERVAL:
                continue
            entry[2] += 1
            entry[3] = now
            packet = entry[1]
            if self.rtx_ssrc:
                b0, b1 = packet[0], packet[1]
                offset = 12 + 4 * (b0 & 0x0F)
                if b0 & 0x10:
                    offset += 4 + 4 * struct.unpack_from("!H", packet, offset + 2)[0]
                self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
                ts = struct.unpack_from("!I", packet, 4)[0]
                packet = (RTP_HEADER.pack(0x80 | (b0 & 0x20), (b1 & 0x80) | self.rtx_pt, self.rtx_seq, ts,
                                          self.rtx_ssrc) + U16.pack(seq) + packet[offset:])
            self.retransmits += 1
            sent += 1
            self.send_rtp(packet)
        return sent


    def send_padding(self, count: int, size: int = 255) -> int:
        """Padding-only probe packets on the RTX stream (LiveKit's WriteProbePackets)."""
        if not self.rtx_ssrc or self.current is None:
            return 0
        body = b"\x00" * (size - 1) + bytes([size])
        ext = self.ext_fn() if self.ext_fn is not None else b""
        for _ in range(count):
            self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
            self.send_rtp(RTP_HEADER.pack(0xA0 | (0x10 if ext else 0), self.rtx_pt, self.rtx_seq, self.last_out_ts,
                                          self.rtx_ssrc) + ext + body)
        return count


def payload_bytes(buf: bytes, h: RtpHeader) -> int:
    return payload_size(buf, h)
