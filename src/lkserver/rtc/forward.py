"""The forwarding core (sans-I/O): one UpTrack per published stream, one DownTrack per subscriber.

An UpTrack receives the publisher's decrypted RTP and hands each packet to its DownTracks,
which rewrite SSRC, payload type, sequence number and timestamp for their subscriber and pass
the packet to a send function (the subscriber transport protects and sends it). Video starts at
a keyframe; padding-only packets are dropped without leaving a hole in the outgoing sequence
numbers. Sender reports are translated per subscriber for lip sync, receiver reports are built
for the publisher (RFC 3550 A.3, A.8). No queues: forwarding is a synchronous call chain.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Optional

from .rtp import (
    ReportBlock,
    RtpHeader,
    SenderReport,
    build_sr,
    get_extension,
    ntp_middle,
    payload_size,
    rewrite,
)

SendFn = Callable[[bytes], None]


def vp8_is_keyframe(payload: bytes) -> bool:
    """RFC 7741: start of partition 0 with the P bit of the VP8 frame header clear."""
    n = len(payload)
    if n < 1:
        return False
    b0 = payload[0]
    if not (b0 & 0x10) or (b0 & 0x07):  # S bit and partition index 0
        return False
    pos = 1
    if b0 & 0x80:  # X: extension byte
        if n < 2:
            return False
        x = payload[1]
        pos = 2
        if x & 0x80:  # I: picture id
            if pos >= n:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K
            pos += 1
    return pos < n and not (payload[pos] & 0x01)


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
    """One RTP stream a publisher sends (one SSRC), and who receives it."""

    def __init__(self, track_sid: str, ssrc: int, codec_name: str, clock_rate: int, is_video: bool,
                 request_keyframe: Callable[[], None], audio_level_ext: int = 0) -> None:
        self.track_sid = track_sid
        self.ssrc = ssrc
        self.codec_name = codec_name.lower()
        self.clock_rate = clock_rate
        self.is_video = is_video
        self.keyframe = KEYFRAME_DETECTORS.get(self.codec_name)
        self.request_keyframe = request_keyframe
        self.audio_level_ext = audio_level_ext
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
        self.last_transit = None
        self.last_sr: Optional[SenderReport] = None
        self.last_sr_received = 0.0
        self.first_packet_at = 0.0

    def on_rtp(self, buf: bytes, h: RtpHeader, arrival: float) -> None:
        self.packets += 1
        self.bytes += len(buf)
        seq = h.seq
        if self.base_seq < 0:
            self.base_seq = self.max_seq = seq
            self.first_packet_at = arrival
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if seq < self.max_seq:
                    self.cycles += 0x10000
                self.max_seq = seq
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
            d.forward(buf, h)

    def on_sender_report(self, sr: SenderReport, now: float) -> None:
        self.last_sr = sr
        self.last_sr_received = now
        for d in self.downs:
            d.send_sender_report(sr)

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


class DownTrack:
    """One subscriber's copy of an UpTrack, with its own SSRC, PT, sequence and time bases."""

    def __init__(self, up: UpTrack, subscriber_sid: str, ssrc: int, pt: int, send_rtp: SendFn,
                 send_rtcp: SendFn) -> None:
        self.up = up
        self.subscriber_sid = subscriber_sid
        self.ssrc = ssrc
        self.pt = pt
        self.send_rtp = send_rtp
        self.send_rtcp = send_rtcp
        self.paused = False
        self.started = False
        self.seq_offset = 0
        self.ts_offset = random.getrandbits(32)
        self.next_seq = random.getrandbits(15)
        self.last_out_seq = -1
        self.packets_sent = 0
        self.octets_sent = 0
        self.first_sent_at = 0.0
        self.on_first_packet: Optional[Callable[[], None]] = None

    def forward(self, buf: bytes, h: RtpHeader) -> None:
        if self.paused:
            return
        if not self.started:
            if self.up.is_video and self.up.keyframe is not None and not self.up.keyframe(buf[h.payload_offset:]):
                self.up.request_keyframe()
                return
            self.started = True
            self.seq_offset = self.next_seq - h.seq
            self.first_sent_at = time.monotonic()
            if self.on_first_packet is not None:
                self.on_first_packet()
        out_seq = (h.seq + self.seq_offset) & 0xFFFF
        size = len(buf) - h.payload_offset
        if h.padding and size and size <= buf[-1]:
            # padding only (a bandwidth probe): drop it and close the gap it would leave
            if self.last_out_seq < 0 or ((out_seq - self.last_out_seq) & 0xFFFF) < 0x8000:
                self.seq_offset -= 1
            return
        self.last_out_seq = out_seq
        self.packets_sent += 1
        self.octets_sent += size
        self.send_rtp(rewrite(buf, h, self.pt, out_seq, h.ts + self.ts_offset, self.ssrc))

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        """Continue after a pause: a new keyframe, with no hole in the sequence numbers."""
        if not self.paused:
            return
        self.paused = False
        if self.started:
            self.started = False
            self.next_seq = (self.last_out_seq + 1) & 0xFFFF if self.last_out_seq >= 0 else self.next_seq
            if self.up.is_video:
                self.up.request_keyframe()

    def send_sender_report(self, sr: SenderReport) -> None:
        if not self.started or self.packets_sent == 0:
            return
        self.send_rtcp(build_sr(self.ssrc, sr.ntp, sr.rtp_ts + self.ts_offset, self.packets_sent, self.octets_sent))


def payload_bytes(buf: bytes, h: RtpHeader) -> int:
    return payload_size(buf, h)
