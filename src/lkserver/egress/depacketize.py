"""RTP -> media frames for egress: a reorder buffer and depacketizers for Opus, VP8 and H.264.

Sans-I/O: packets in, frames out. Opus (RFC 7587): the payload is one Opus packet; in RED (RFC
2198) the primary block is, with redundant blocks filling in for lost packets. VP8 (RFC
7741 §4): the payload descriptor is stripped and partitions of one picture are joined; a frame
starts with S=1, PID=0 and ends at the marker bit. H.264 (RFC 6184 §5.6-5.8): single NAL units,
STAP-A aggregates and FU-A fragments become one Annex B access unit per RTP timestamp. A lost
packet drops the frame it belonged to; video then waits for the next keyframe and says so
(`need_keyframe`), so the caller can ask the publisher for one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

START_CODE = b"\x00\x00\x00\x01"


@dataclass(slots=True)
class RtpPacket:
    seq: int
    timestamp: int
    marker: bool
    pt: int
    ssrc: int
    payload: bytes

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < 12 or data[0] >> 6 != 2:
            raise ValueError("not an RTP packet")
        b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
        off = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:  # header extension
            if len(data) < off + 4:
                raise ValueError("truncated RTP extension")
            off += 4 + 4 * struct.unpack_from("!H", data, off + 2)[0]
        end = len(data)
        if b0 & 0x20 and end > off:  # padding
            end -= data[-1]
        if end < off:
            raise ValueError("truncated RTP packet")
        return cls(seq, ts, bool(b1 & 0x80), b1 & 0x7F, ssrc, bytes(data[off:end]))


@dataclass(slots=True)
class Frame:
    """One media frame: an Opus packet, a VP8 picture or an H.264 access unit (Annex B)."""

    timestamp: int  # RTP timestamp, unwrapped to 64 bits
    data: bytes
    keyframe: bool


class ReorderBuffer:
    """Puts packets back in sequence order; a gap is given up after `max_wait` later packets.

    Bounded: at most `capacity` packets are held; older ones are released (or dropped, if they
    arrive after their turn) so memory never grows with loss or reordering.
    """

    def __init__(self, max_wait: int = 16, capacity: int = 256) -> None:
        self.max_wait = max_wait
        self.capacity = capacity
        self.next_seq: int | None = None
        self.held: dict[int, RtpPacket] = {}
        self.lost = 0

    def push(self, pkt: RtpPacket) -> list[RtpPacket | None]:
        """Packets now in order; `None` marks where packets were given up as lost."""
        if self.next_seq is None:
            self.next_seq = pkt.seq
        behind = (self.next_seq - pkt.seq) & 0xFFFF
        if 0 < behind < 0x8000:
            return []  # late or duplicate
        self.held[pkt.seq] = pkt
        out: list[RtpPacket | None] = []
        while True:
            p = self.held.pop(self.next_seq, None)
            if p is not None:
                out.append(p)
                self.next_seq = (self.next_seq + 1) & 0xFFFF
                continue
            if not self.held or (len(self.held) <= self.max_wait and len(self.held) < self.capacity):
                break
            # give up on the gap: skip to the oldest held packet
            first = min(self.held, key=lambda s: (s - self.next_seq) & 0xFFFF)
            self.lost += (first - self.next_seq) & 0xFFFF
            self.next_seq = first
            out.append(None)
        return out


class TimestampUnwrapper:
    def __init__(self) -> None:
        self.last: int | None = None
        self.offset = 0

    def unwrap(self, ts: int) -> int:
        if self.last is not None:
            if ts < self.last and self.last - ts > 0x80000000:
                self.offset += 1 << 32
            elif ts > self.last and ts - self.last > 0x80000000:
                self.offset -= 1 << 32
        self.last = ts
        return ts + self.offset


class Depacketizer:
    """Feed in-order packets (None = loss); get whole frames."""

    is_video = False

    def __init__(self) -> None:
        self.unwrapper = TimestampUnwrapper()
        self.need_keyframe = self.is_video

    def push(self, pkt: RtpPacket | None) -> list[Frame]:
        raise NotImplementedError


class OpusDepacketizer(Depacketizer):
    def push(self, pkt: RtpPacket | None) -> list[Frame]:
        if pkt is None or not pkt.payload:
            return []
        return [Frame(self.unwrapper.unwrap(pkt.timestamp), pkt.payload, True)]


def red_blocks(payload: bytes) -> list[tuple[int, bytes]]:
    """RFC 2198 RED: [(timestamp offset, block)], the redundant blocks first, the primary last."""
    headers: list[tuple[int, int]] = []
    i = 0
    while True:
        if i >= len(payload):
            raise ValueError("truncated RED header")
        b = payload[i]
        if not b & 0x80:  # the last header: the primary block, one byte
            i += 1
            break
        if i + 4 > len(payload):
            raise ValueError("truncated RED header")
        offset = (payload[i + 1] << 6) | (payload[i + 2] >> 2)
        length = ((payload[i + 2] & 0x03) << 8) | payload[i + 3]
        headers.append((offset, length))
        i += 4
    out = []
    for offset, length in headers:
        if i + length > len(payload):
            raise ValueError("truncated RED block")
        out.append((offset, payload[i:i + length]))
        i += length
    out.append((0, payload[i:]))
    return out


class RedOpusDepacketizer(Depacketizer):
    """Opus in RED (how LiveKit clients publish audio): the primary block of each packet, and a
    redundant block when it carries audio that a lost packet took away."""

    def __init__(self) -> None:
        super().__init__()
        self.last_ts: Optional[int] = None

    def push(self, pkt: Optional[RtpPacket]) -> list[Frame]:
        if pkt is None or not pkt.payload:
            return []
        try:
            blocks = red_blocks(pkt.payload)
        except ValueError:
            return []
        ts = self.unwrapper.unwrap(pkt.timestamp)
        out = []
        for offset, data in blocks:
            t = ts - offset
            if data and (self.last_ts is None and offset == 0 or self.last_ts is not None and t > self.last_ts):
                out.append(Frame(t, data, True))
                self.last_ts = t
        return out


class _VideoDepacketizer(Depacketizer):
    is_video = True

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []
        self.ts: int | None = None
        self.broken = False

    def push(self, pkt: RtpPacket | None) -> list[Frame]:
        if pkt is None:
            self.broken = True  # the current picture misses a piece
            return []
        out: list[Frame] = []
        if self.ts is not None and pkt.timestamp != self.ts:
            out.extend(self._finish())  # marker lost: the timestamp moved on
        if self.ts is None:
            self.ts = pkt.timestamp
            self.broken = self.broken or not self._starts_frame(pkt.payload)
        try:
            self._append(pkt.payload)
        except (IndexError, ValueError, struct.error):
            self.broken = True
        if pkt.marker:
            out.extend(self._finish())
        return out

    def _finish(self) -> list[Frame]:
        parts, ts, broken = self.parts, self.ts, self.broken
        self.parts, self.ts, self.broken = [], None, False
        if broken:
            self.need_keyframe = True
            return []
        if ts is None or not parts:
            return []
        data = b"".join(parts)
        key = self._is_keyframe(data)
        if self.need_keyframe and not key:
            return []
        self.need_keyframe = False
        return [Frame(self.unwrapper.unwrap(ts), data, key)]

    def _starts_frame(self, payload: bytes) -> bool:
        return True

    def _append(self, payload: bytes) -> None:
        raise NotImplementedError

    def _is_keyframe(self, data: bytes) -> bool:
        raise NotImplementedError


def vp8_descriptor_length(payload: bytes) -> int:
    """Bytes of the RFC 7741 payload descriptor at the start of `payload`."""
    n = 1
    if payload[0] & 0x80:  # X
        x = payload[1]
        n = 2
        if x & 0x80:  # I: picture id, 7 or 15 bits
            n += 2 if payload[n] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            n += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            n += 1
    if n >= len(payload):
        raise ValueError("VP8 payload without data")
    return n


class VP8Depacketizer(_VideoDepacketizer):
    def _starts_frame(self, payload: bytes) -> bool:
        return bool(payload) and bool(payload[0] & 0x10) and (payload[0] & 0x07) == 0

    def _append(self, payload: bytes) -> None:
        self.parts.append(payload[vp8_descriptor_length(payload):])

    def _is_keyframe(self, data: bytes) -> bool:
        return len(data) >= 3 and not (data[0] & 0x01)


class H264Depacketizer(_VideoDepacketizer):
    def __init__(self) -> None:
        super().__init__()
        self.fu: bytearray | None = None

    def _append(self, payload: bytes) -> None:
        nal_type = payload[0] & 0x1F
        if 1 <= nal_type <= 23:
            self.parts.append(START_CODE + payload)
        elif nal_type == 24:  # STAP-A
            i = 1
            while i + 2 <= len(payload):
                size = struct.unpack_from("!H", payload, i)[0]
                i += 2
                if size == 0 or i + size > len(payload):
                    raise ValueError("bad STAP-A")
                self.parts.append(START_CODE + payload[i:i + size])
                i += size
        elif nal_type == 28:  # FU-A
            fu_header = payload[1]
            if fu_header & 0x80:  # start
                self.fu = bytearray([(payload[0] & 0xE0) | (fu_header & 0x1F)])
            if self.fu is None:
                raise ValueError("FU-A continuation without a start")
            self.fu += payload[2:]
            if fu_header & 0x40:  # end
                self.parts.append(START_CODE + bytes(self.fu))
                self.fu = None
        else:
            raise ValueError(f"unsupported H.264 NAL type {nal_type}")

    def _finish(self) -> list[Frame]:
        if self.fu is not None:
            self.broken = True
            self.fu = None
        return super()._finish()

    def _is_keyframe(self, data: bytes) -> bool:
        i = 0
        while True:
            i = data.find(START_CODE, i)
            if i < 0 or i + 4 >= len(data):
                return False
            t = data[i + 4] & 0x1F
            if t in (5, 7):  # IDR slice or SPS
                return True
            i += 4


def depacketizer_for(mime: str) -> Depacketizer:
    m = mime.lower()
    if m == "audio/opus":
        return OpusDepacketizer()
    if m == "audio/red":
        return RedOpusDepacketizer()
    if m == "video/vp8":
        return VP8Depacketizer()
    if m == "video/h264":
        return H264Depacketizer()
    raise ValueError(f"no depacketizer for {mime}")
