"""Transport-wide congestion control feedback (sans-I/O): what the publisher's GCC needs.

draft-holmer-rmcat-transport-wide-cc-extensions-01: the publisher numbers every packet with a
transport-wide sequence number (a header extension); we record each one's arrival time and
send RTPFB FMT 15 feedback listing, for a run of sequence numbers, which arrived and when
(deltas in 250 µs units from a reference time in 64 ms units). Chunks are run-length encoded.
LiveKit answers the publisher leg this way instead of with REMB (reference sfu-quality.md §7).
"""

from __future__ import annotations

import struct

from .rtp import RTCP_HEADER, RTCP_RTPFB, RTPFB_TWCC, U16, U32

NOT_RECEIVED, SMALL_DELTA, LARGE_DELTA = 0, 1, 2
MAX_HISTORY = 1 << 12  # sequence numbers kept waiting for feedback (bounded)
MAX_RUN = 0x1FFF


class TwccRecorder:
    def __init__(self, sender_ssrc: int = 1) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = 0
        self.arrivals: dict[int, int] = {}  # extended sequence number -> arrival (µs)
        self.last_ext = -1  # highest extended sequence number seen
        self.reported = -1  # highest extended sequence number already in a feedback
        self.count = 0  # feedback packet counter (8 bits on the wire)

    def record(self, seq: int, arrival_us: int, media_ssrc: int = 0) -> None:
        if self.last_ext < 0:
            ext = seq
        else:
            delta = (seq - (self.last_ext & 0xFFFF)) & 0xFFFF
            ext = self.last_ext + delta if delta < 0x8000 else self.last_ext + delta - 0x10000
        if ext <= self.reported or ext in self.arrivals:
            return  # late (already reported as lost) or a duplicate
        self.arrivals[ext] = arrival_us
        if ext > self.last_ext:
            self.last_ext = ext
        if media_ssrc:
            self.media_ssrc = media_ssrc
        if len(self.arrivals) > MAX_HISTORY:
            for old in sorted(self.arrivals)[: len(self.arrivals) - MAX_HISTORY]:
                del self.arrivals[old]

    def build(self) -> bytes | None:
        """One feedback packet for everything recorded since the last one, or None."""
        if not self.arrivals:
            return None
        seqs = sorted(self.arrivals)
        base, end = seqs[0], seqs[-1]
        if end - base + 1 > 0xFFFF:
            base = end - 0xFFFE
        first_arrival = self.arrivals[seqs[0]]
        reference = first_arrival // 64000  # 64 ms units
        last = reference * 64000
        statuses: list[int] = []
        deltas = bytearray()
        for ext in range(base, end + 1):
            arrival = self.arrivals.get(ext)
            if arrival is None:
                statuses.append(NOT_RECEIVED)
                continue
            delta = (arrival - last) // 250
            last += delta * 250
            if 0 <= delta <= 0xFF:
                statuses.append(SMALL_DELTA)
                deltas.append(delta)
            else:
                delta = max(-0x8000, min(0x7FFF, delta))
                statuses.append(LARGE_DELTA)
                deltas += struct.pack("!h", delta)
        chunks = bytearray()
        i = 0
        while i < len(statuses):
            symbol, run = statuses[i], 1
            while i + run < len(statuses) and statuses[i + run] == symbol and run < MAX_RUN:
                run += 1
            chunks += U16.pack((symbol << 13) | run)
            i += run
        body = (U32.pack(self.sender_ssrc) + U32.pack(self.media_ssrc) + U16.pack(base & 0xFFFF)
                + U16.pack(len(statuses)) + U32.pack(((reference & 0xFFFFFF) << 8) | (self.count & 0xFF))
                + bytes(chunks) + bytes(deltas))
        body += b"\x00" * (-len(body) % 4)
        self.count += 1
        self.reported = end
        self.arrivals.clear()
        return RTCP_HEADER.pack(0x80 | RTPFB_TWCC, RTCP_RTPFB, len(body) // 4) + body


def parse_feedback(data: bytes) -> tuple[int, list[tuple[int, int | None]]]:
    """(feedback count, [(sequence number, arrival µs relative to the reference or None)]) of a
    feedback packet built as above (run-length chunks); used by the tests."""
    base, status_count = struct.unpack_from("!HH", data, 12)
    ref_and_count = U32.unpack_from(data, 16)[0]
    reference = (ref_and_count >> 8) * 64000
    pos = 20
    statuses: list[int] = []
    while len(statuses) < status_count:
        chunk = U16.unpack_from(data, pos)[0]
        pos += 2
        if chunk & 0x8000:
            raise ValueError("status vector chunks are not produced here")
        statuses += [(chunk >> 13) & 0x3] * (chunk & MAX_RUN)
    out: list[tuple[int, int | None]] = []
    t = reference
    for i, status in enumerate(statuses[:status_count]):
        seq = (base + i) & 0xFFFF
        if status == NOT_RECEIVED:
            out.append((seq, None))
            continue
        if status == SMALL_DELTA:
            t += data[pos] * 250
            pos += 1
        else:
            t += struct.unpack_from("!h", data, pos)[0] * 250
            pos += 2
        out.append((seq, t))
    return ref_and_count & 0xFF, out
