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
