"""RTP depacketizers (sans-I/O): a WHIP publisher's RTP back into encoded frames for transcoding.

RFC 7741 (VP8 payload descriptor), RFC 6184 (H.264 single NAL unit, STAP-A and FU-A packets,
written out as an Annex B access unit), RFC 7587 (Opus: the payload is the frame). A frame is
the run of packets sharing a timestamp and ending with the marker bit; a gap in sequence numbers
drops the frame being assembled and reports that a keyframe is needed. Reordering within
`REORDER_WINDOW` packets is repaired; a frame never holds more than `MAX_FRAME_PACKETS` packets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REORDER_WINDOW = 16
MAX_FRAME_PACKETS = 2048
START_CODE = b"\x00\x00\x00\x01"


@dataclass
class Frame:
    data: bytes
    timestamp: int  # RTP timestamp
    keyframe: bool = False


def vp8_payload(payload: bytes) -> tuple[bytes, bool]:
    """(VP8 data, starts a partition 0) after the RFC 7741 payload descriptor."""
    if not payload:
        return b"", False
    b0 = payload[0]
    pos = 1
    if b0 & 0x80:
        x = payload[1]
        pos = 2
        if x & 0x80:
            pos += 2 if payload[pos] & 0x80 else 1
        if x & 0x40:
            pos += 1
        if x & 0x30:
            pos += 1
    start = bool(b0 & 0x10) and (b0 & 0x07) == 0
    return payload[pos:], start


def vp8_keyframe(data: bytes) -> bool:
    return bool(data) and not (data[0] & 0x01)


def h264_nals(payload: bytes) -> list[tuple[bytes, bool, bool]]:
    """(NAL unit bytes or FU-A fragment, fragment start, fragment end) of one packet."""
    if not payload:
        return []
    nal_type = payload[0] & 0x1F
    if nal_type == 24:  # STAP-A
        out, pos = [], 1
        while pos + 2 <= len(payload):
            size = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if size == 0 or pos + size > len(payload):
                break
            out.append((payload[pos:pos + size], True, True))
            pos += size
        return out
    if nal_type == 28:  # FU-A
        if len(payload) < 2:
            return []
        header = payload[1]
        start, end = bool(header & 0x80), bool(header & 0x40)
        if start:
            nal_header = bytes(((payload[0] & 0xE0) | (header & 0x1F),))
            return [(nal_header + payload[2:], True, end)]
        return [(payload[2:], False, end)]
    return [(payload, True, True)]


@dataclass
class FrameAssembler:
    """Packets of one RTP stream in, whole frames out."""

    codec: str  # "vp8" | "h264" | "opus"
    expected_seq: int = -1
    pending: dict[int, tuple[int, int, bytes]] = field(default_factory=dict)  # seq -> (ts, marker, payload)
    parts: list[bytes] = field(default_factory=list)
    frame_ts: int = -1
    broken: bool = False  # the frame being assembled lost a packet
    need_keyframe: bool = True  # nothing decodable until a keyframe
    keyframe_requests: int = 0  # how many times a keyframe became necessary

    def push(self, seq: int, timestamp: int, marker: bool, payload: bytes) -> list[Frame]:
        if self.codec == "opus":
            return [Frame(bytes(payload), timestamp, True)]
        if self.expected_seq < 0:
            self.expected_seq = seq
        delta = (seq - self.expected_seq) & 0xFFFF
        if delta >= 0x8000:
            return []  # late duplicate or a packet from before a loss already accounted for
        self.pending[seq] = (timestamp, int(marker), bytes(payload))
        frames: list[Frame] = []
        while True:
            item = self.pending.pop(self.expected_seq, None)
            if item is None:
                if len(self.pending) <= REORDER_WINDOW:
                    break
                # the missing packet is not coming: skip to the oldest one we have
                self._lost()
                self.expected_seq = min(self.pending, key=lambda s: (s - self.expected_seq) & 0xFFFF)
                continue
            self.expected_seq = (self.expected_seq + 1) & 0xFFFF
            frame = self._add(*item)
            if frame is not None:
                frames.append(frame)
        return frames

    def _lost(self) -> None:
        self.broken = True
        if not self.need_keyframe:
            self.need_keyframe = True
            self.keyframe_requests += 1

    def _add(self, timestamp: int, marker: int, payload: bytes) -> Frame | None:
        if timestamp != self.frame_ts:
            self.parts.clear()
            self.broken = False
            self.frame_ts = timestamp
        if len(self.parts) >= MAX_FRAME_PACKETS:
            self.broken = True
        elif self.codec == "vp8":
            data, _ = vp8_payload(payload)
            self.parts.append(data)
        else:
            for nal, start, end in h264_nals(payload):
                self.parts.append((START_CODE if start else b"") + nal)
        if not marker:
            return None
        parts, self.parts = self.parts, []
        self.frame_ts = -1
        if self.broken:
            self.broken = False
            return None
        data = b"".join(parts)
        key = vp8_keyframe(data) if self.codec == "vp8" else _h264_has_idr(data)
        if self.need_keyframe and not key:
            return None
        if key:
            self.need_keyframe = False
        return Frame(data, timestamp, key)


def _h264_has_idr(annexb: bytes) -> bool:
    pos = annexb.find(START_CODE)
    while pos >= 0:
        if pos + 4 < len(annexb) and annexb[pos + 4] & 0x1F == 5:
            return True
        pos = annexb.find(START_CODE, pos + 4)
    return False


class _Bits:
    """MSB-first bit reader with Exp-Golomb codes (H.264 §9.1)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]  # IndexError past the end: a truncated SPS
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


HIGH_PROFILES = (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135)


def sps_size(sps: bytes) -> tuple[int, int] | None:
    """Picture size from an H.264 SPS NAL unit (H.264 §7.3.2.1.1, frame cropping applied)."""
    rbsp = bytearray()
    zeros = 0
    for b in sps[1:]:  # drop emulation prevention bytes (00 00 03)
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        rbsp.append(b)
        zeros = zeros + 1 if b == 0 else 0
    try:
        r = _Bits(bytes(rbsp))
        profile = r.u(8)
        r.u(16)  # constraint flags, level
        r.ue()  # seq_parameter_set_id
        chroma = 1
        if profile in HIGH_PROFILES:
            chroma = r.ue()
            if chroma == 3:
                r.u(1)
            r.ue()
            r.ue()
            r.u(1)
            if r.u(1):  # scaling matrices
                for i in range(12 if chroma == 3 else 8):
                    if r.u(1):
                        last = nxt = 8
                        for _ in range(16 if i < 6 else 64):
                            if nxt:
                                nxt = (last + r.se() + 256) % 256
                            last = nxt or last
        r.ue()  # log2_max_frame_num_minus4
        poc = r.ue()
        if poc == 0:
            r.ue()
        elif poc == 1:
            r.u(1)
            r.se()
            r.se()
            for _ in range(r.ue()):
                r.se()
        r.ue()  # max_num_ref_frames
        r.u(1)
        width = (r.ue() + 1) * 16
        map_units = r.ue() + 1
        frame_mbs_only = r.u(1)
        if not frame_mbs_only:
            r.u(1)
        r.u(1)
        height = (2 - frame_mbs_only) * map_units * 16
        if r.u(1):  # frame cropping
            left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
            cx = 2 if chroma in (1, 2) else 1
            cy = (2 if chroma == 1 else 1) * (2 - frame_mbs_only)
            width -= (left + right) * cx
            height -= (top + bottom) * cy
    except (IndexError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None
