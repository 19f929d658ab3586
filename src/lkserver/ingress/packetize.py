"""RTP packetizers (sans-I/O): encoded Opus, VP8 and H.264 frames into RTP packets.

RFC 3550 (fixed header: one sequence number space per stream, marker on a frame's last
packet), RFC 7587 (Opus: one frame per packet, 48 kHz clock), RFC 7741 (VP8: payload descriptor
with a 15-bit picture ID, S bit on a frame's first packet), RFC 6184 (H.264 packetization mode
1: single NAL unit packets, STAP-A aggregating small NAL units such as SPS+PPS, FU-A fragments
for NAL units larger than the payload budget). Video uses a 90 kHz clock.
"""

from __future__ import annotations

import random
import struct

RTP_HEADER = struct.Struct("!BBHII")
MAX_PAYLOAD = 1200  # bytes per packet: fits a 1280-byte path MTU after IP/UDP/SRTP overhead

NAL_AUD, NAL_FILLER, STAP_A, FU_A = 9, 12, 24, 28


class RtpPacketizer:
    """One RTP stream: SSRC, payload type, sequence numbers; frames in, packets out."""

    def __init__(self, ssrc: int, pt: int, clock_rate: int, codec: str,
                 max_payload: int = MAX_PAYLOAD) -> None:
        self.ssrc = ssrc
        self.pt = pt
        self.clock_rate = clock_rate
        self.codec = codec.lower()  # "opus" | "vp8" | "h264"
        self.max_payload = max_payload
        self.seq = random.getrandbits(16)
        self.picture_id = random.getrandbits(15)
        self.packets = 0
        self.octets = 0
        self.last_ts = 0

    def packetize(self, frame: bytes, timestamp: int) -> list[bytes]:
        """The RTP packets of one encoded frame (access unit for H.264) at `timestamp`."""
        if self.codec == "opus":
            payloads = [frame]
        elif self.codec == "vp8":
            payloads = vp8_payloads(frame, self.picture_id, self.max_payload)
            self.picture_id = (self.picture_id + 1) & 0x7FFF
        elif self.codec == "h264":
            payloads = h264_payloads(frame, self.max_payload)
        else:
            raise ValueError(f"no packetizer for {self.codec}")
        ts = timestamp & 0xFFFFFFFF
        self.last_ts = ts
        out = []
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            marker = 0x80 if i == last and self.codec != "opus" else 0
            out.append(RTP_HEADER.pack(0x80, marker | self.pt, self.seq, ts, self.ssrc) + payload)
            self.seq = (self.seq + 1) & 0xFFFF
            self.packets += 1
            self.octets += len(payload)
        return out


def vp8_payloads(frame: bytes, picture_id: int, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """RFC 7741 §4.2: X=1, I=1 with a 15-bit picture ID (M=1); S=1 on the first packet."""
    pid = struct.pack("!H", 0x8000 | (picture_id & 0x7FFF))
    room = max_payload - 4
    out = []
    for i in range(0, max(len(frame), 1), room):
        first = 0x90 if i == 0 else 0x80
        out.append(bytes((first, 0x80)) + pid + frame[i:i + room])
    return out


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes)."""
    nals = []
    n = len(data)
    i = data.find(b"\x00\x00\x01")
    while 0 <= i < n:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        end = n if j < 0 else j
        # zeros before a start code (a 4-byte start code, trailing_zero_8bits) are not NAL data
        nal_end = end
        while j >= 0 and nal_end > start and data[nal_end - 1] == 0:
            nal_end -= 1
        if nal_end > start:
            nals.append(data[start:nal_end])
        i = j
    return nals


def split_avcc(data: bytes, length_size: int = 4) -> list[bytes]:
    """NAL units of length-prefixed (AVCC) data, as FLV and MP4 carry H.264."""
    nals, pos, n = [], 0, len(data)
    while pos + length_size <= n:
        size = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > n:
            break
        nals.append(data[pos:pos + size])
        pos += size
    return nals


def h264_payloads(access_unit: bytes, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """RFC 6184 packetization mode 1 for one Annex B access unit."""
    nals = [nal for nal in split_annexb(access_unit) if nal[0] & 0x1F not in (NAL_AUD, NAL_FILLER)]
    out: list[bytes] = []
    group: list[bytes] = []  # small NAL units waiting to share a STAP-A

    def flush() -> None:
        if len(group) == 1:
            out.append(group[0])
        elif group:
            nri = max(nal[0] & 0x60 for nal in group)
            out.append(bytes((nri | STAP_A,)) + b"".join(struct.pack("!H", len(nal)) + nal for nal in group))
        group.clear()

    for nal in nals:
        if len(nal) > max_payload:
            flush()
            out.extend(fu_a(nal, max_payload))
            continue
        size = 1 + sum(2 + len(g) for g in group) + 2 + len(nal)
        if group and size > max_payload:
            flush()
        group.append(nal)
    flush()
    return out


def fu_a(nal: bytes, max_payload: int) -> list[bytes]:
    indicator = (nal[0] & 0xE0) | FU_A
    nal_type = nal[0] & 0x1F
    body = nal[1:]
    room = max_payload - 2
    out = []
    for i in range(0, len(body), room):
        header = nal_type
        if i == 0:
            header |= 0x80
        if i + room >= len(body):
            header |= 0x40
        out.append(bytes((indicator, header)) + body[i:i + room])
    return out
