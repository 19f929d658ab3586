"""RTP and RTCP on the forwarding path (sans-I/O): read headers, rewrite, build feedback.

RFC 3550 (RTP, SR/RR), RFC 8285 (header extensions, one- and two-byte forms), RFC 4585
(PLI, NACK), RFC 5104 (FIR). Parsing reads only what forwarding needs, with `struct` on the
raw bytes; nothing here allocates per packet beyond the rewritten output.
"""

from __future__ import annotations

import struct
from typing import Iterator, NamedTuple

RTP_HEADER = struct.Struct("!BBHII")
RTCP_HEADER = struct.Struct("!BBH")
U32 = struct.Struct("!I")
U16 = struct.Struct("!H")
SR_BODY = struct.Struct("!IIIIII")  # sender ssrc, ntp msw, ntp lsw, rtp ts, packets, octets
REPORT_BLOCK = struct.Struct("!IBBHIIII")  # ssrc, fraction, cum lost (24 bits split), seq, jitter, lsr, dlsr

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_RTPFB = 205
RTCP_PSFB = 206

PSFB_PLI = 1
PSFB_FIR = 4
PSFB_AFB = 15  # REMB
RTPFB_NACK = 1
RTPFB_TWCC = 15

ONE_BYTE_PROFILE = 0xBEDE


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192-223 in the second byte."""
    return len(data) >= 2 and 192 <= data[1] <= 223


class RtpHeader(NamedTuple):
    pt: int
    marker: int
    seq: int
    ts: int
    ssrc: int
    payload_offset: int
    ext_profile: int
    ext_start: int  # first byte of the extension elements
    ext_end: int
    padding: int  # the P bit


def parse_rtp(buf: bytes) -> RtpHeader | None:
    """The fixed header and extension bounds of an RTP packet; None if it is not one."""
    n = len(buf)
    if n < 12:
        return None
    b0, b1, seq, ts, ssrc = RTP_HEADER.unpack_from(buf, 0)
    if b0 >> 6 != 2:
        return None
    off = 12 + 4 * (b0 & 0x0F)
    profile = ext_start = ext_end = 0
    if b0 & 0x10:
        if off + 4 > n:
            return None
        profile, words = struct.unpack_from("!HH", buf, off)
        ext_start = off + 4
        ext_end = ext_start + 4 * words
        off = ext_end
    if off > n:
        return None
    return RtpHeader(b1 & 0x7F, b1 >> 7, seq, ts, ssrc, off, profile, ext_start, ext_end, (b0 >> 5) & 1)


def get_extension(buf: bytes, h: RtpHeader, ext_id: int) -> bytes | None:
    """The value of header extension `ext_id`, or None."""
    if not ext_id or not h.ext_start:
        return None
    pos, end = h.ext_start, h.ext_end
    if h.ext_profile == ONE_BYTE_PROFILE:
        while pos < end:
            b = buf[pos]
            if b == 0:  # padding
                pos += 1
                continue
            eid, length = b >> 4, (b & 0x0F) + 1
            if eid == 15:
                return None
            if eid == ext_id:
                return bytes(buf[pos + 1:pos + 1 + length])
            pos += 1 + length
    elif h.ext_profile >> 4 == 0x100:  # two-byte form
        while pos + 1 < end:
            eid = buf[pos]
            if eid == 0:
                pos += 1
                continue
            length = buf[pos + 1]
            if eid == ext_id:
                return bytes(buf[pos + 2:pos + 2 + length])
            pos += 2 + length
    return None


def payload_size(buf: bytes, h: RtpHeader) -> int:
    """Payload bytes without RTP padding (0 for a padding-only packet)."""
    size = len(buf) - h.payload_offset
    if h.padding and size > 0:
        size -= buf[-1]
    return max(size, 0)


def rewrite(buf: bytes, h: RtpHeader, pt: int, seq: int, ts: int, ssrc: int, ext: bytes = b"",
            payload: bytes | None = None) -> bytes:
    """The packet with a new PT, sequence number, timestamp and SSRC.

    CSRCs and the original header extensions are dropped; `ext` (a complete extension block,
    profile and length included) is written instead when given. Marker, padding and payload
    are kept.
    """
    if payload is not None:  # a replaced payload (RED primary extraction) carries no padding
        return RTP_HEADER.pack(0x80 | (0x10 if ext else 0), (h.marker << 7) | pt, seq & 0xFFFF,
                               ts & 0xFFFFFFFF, ssrc) + ext + payload
    b0 = 0x80 | (h.padding << 5) | (0x10 if ext else 0)
    return RTP_HEADER.pack(b0, (h.marker << 7) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + ext + buf[h.payload_offset:]


def one_byte_extensions(elements: list[tuple[int, bytes]]) -> bytes:
    """A one-byte-form extension block (RFC 8285 §4.2) from (id, value) pairs."""
    body = b"".join(bytes([(eid << 4) | (len(v) - 1)]) + v for eid, v in elements)
    body += b"\x00" * (-len(body) % 4)
    return U16.pack(ONE_BYTE_PROFILE) + U16.pack(len(body) // 4) + body


# -- RTCP ------------------------------------------------------------------------------------------

class RtcpPacket(NamedTuple):
    pt: int
    count: int  # RC / SC / FMT
    data: bytes  # the whole packet, header included


def iter_rtcp(buf: bytes) -> Iterator[RtcpPacket]:
    """The packets of a compound RTCP packet; stops at the first malformed one."""
    pos, n = 0, len(buf)
    while pos + 4 <= n:
        b0, pt, length = RTCP_HEADER.unpack_from(buf, pos)
        size = 4 * (length + 1)
        if b0 >> 6 != 2 or pos + size > n:
            return
        yield RtcpPacket(pt, b0 & 0x1F, buf[pos:pos + size])
        pos += size


class SenderReport(NamedTuple):
    ssrc: int
    ntp: int  # 64-bit NTP timestamp
    rtp_ts: int
    packets: int
    octets: int


def parse_sr(p: RtcpPacket) -> SenderReport | None:
    if p.pt != RTCP_SR or len(p.data) < 28:
        return None
    ssrc, msw, lsw, ts, packets, octets = SR_BODY.unpack_from(p.data, 4)
    return SenderReport(ssrc, (msw << 32) | lsw, ts, packets, octets)


def build_sr(ssrc: int, ntp: int, rtp_ts: int, packets: int, octets: int) -> bytes:
    return RTCP_HEADER.pack(0x80, RTCP_SR, 6) + SR_BODY.pack(
        ssrc, (ntp >> 32) & 0xFFFFFFFF, ntp & 0xFFFFFFFF, rtp_ts & 0xFFFFFFFF,
        packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)


class ReportBlock(NamedTuple):
    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int  # extended
    jitter: int
    lsr: int
    dlsr: int


def build_rr(sender_ssrc: int, blocks: list[ReportBlock]) -> bytes:
    blocks = blocks[:31]
    body = U32.pack(sender_ssrc)
    for b in blocks:
        lost = max(min(b.cumulative_lost, 0x7FFFFF), -0x800000) & 0xFFFFFF
        body += REPORT_BLOCK.pack(b.ssrc, b.fraction_lost & 0xFF, lost >> 16, lost & 0xFFFF,
                                  b.highest_seq & 0xFFFFFFFF, b.jitter & 0xFFFFFFFF,
                                  b.lsr & 0xFFFFFFFF, b.dlsr & 0xFFFFFFFF)
    return RTCP_HEADER.pack(0x80 | len(blocks), RTCP_RR, len(body) // 4) + body


def parse_report_blocks(p: RtcpPacket) -> list[ReportBlock]:
    """Report blocks of an SR or RR."""
    if p.pt == RTCP_SR:
        pos = 28
    elif p.pt == RTCP_RR:
        pos = 8
    else:
        return []
    out = []
    for _ in range(p.count):
        if pos + 24 > len(p.data):
            break
        ssrc, frac, lost_hi, lost_lo, seq, jitter, lsr, dlsr = REPORT_BLOCK.unpack_from(p.data, pos)
        lost = (lost_hi << 16) | lost_lo
        if lost & 0x800000:
            lost -= 0x1000000
        out.append(ReportBlock(ssrc, frac, lost, seq, jitter, lsr, dlsr))
        pos += 24
    return out


def feedback_ssrcs(p: RtcpPacket) -> tuple[int, int]:
    """(sender SSRC, media SSRC) of an RTPFB/PSFB packet."""
    if len(p.data) < 12:
        return 0, 0
    return U32.unpack_from(p.data, 4)[0], U32.unpack_from(p.data, 8)[0]


def fir_ssrcs(p: RtcpPacket) -> list[int]:
    """Media SSRCs a FIR asks keyframes for (its FCI entries)."""
    return [U32.unpack_from(p.data, pos)[0] for pos in range(12, len(p.data) - 7, 8)]


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return RTCP_HEADER.pack(0x80 | PSFB_PLI, RTCP_PSFB, 2) + U32.pack(sender_ssrc) + U32.pack(media_ssrc)


def build_nack(sender_ssrc: int, media_ssrc: int, seqs: list[int]) -> bytes:
    """A generic NACK (RFC 4585 §6.2.1) asking for `seqs`, packed as PID + bitmask pairs."""
    fci = bytearray()
    pending = sorted(set(s & 0xFFFF for s in seqs), key=lambda s: ((s - seqs[0]) & 0xFFFF))
    i = 0
    while i < len(pending):
        pid, blp = pending[i], 0
        i += 1
        while i < len(pending) and 0 < ((pending[i] - pid) & 0xFFFF) <= 16:
            blp |= 1 << (((pending[i] - pid) & 0xFFFF) - 1)
            i += 1
        fci += struct.pack("!HH", pid, blp)
    return RTCP_HEADER.pack(0x80 | RTPFB_NACK, RTCP_RTPFB, 2 + len(fci) // 4) + U32.pack(sender_ssrc) \
        + U32.pack(media_ssrc) + bytes(fci)


def unwrap_rtx(buf: bytes, h: RtpHeader, pt: int, ssrc: int) -> bytes | None:
    """The original packet an RFC 4588 retransmission carries (its OSN, the media PT and SSRC),
    or None for padding-only packets (bandwidth probes on the RTX stream)."""
    end = len(buf) - (buf[-1] if h.padding else 0)
    if end - h.payload_offset < 3:
        return None
    osn = (buf[h.payload_offset] << 8) | buf[h.payload_offset + 1]
    return RTP_HEADER.pack(0x80, (h.marker << 7) | pt, osn, h.ts, ssrc) + buf[h.payload_offset + 2:end]


def parse_nack(p: RtcpPacket) -> list[int]:
    """Sequence numbers a generic NACK (RFC 4585 §6.2.1) asks for."""
    seqs = []
    for pos in range(12, len(p.data) - 3, 4):
        pid, blp = struct.unpack_from("!HH", p.data, pos)
        seqs.append(pid)
        for i in range(16):
            if blp & (1 << i):
                seqs.append((pid + i + 1) & 0xFFFF)
    return seqs


def red_primary(payload: bytes) -> tuple[int, int] | None:
    """(payload type, offset) of the primary block of an RFC 2198 RED payload, or None."""
    pos, skip, n = 0, 0, len(payload)
    while pos < n and payload[pos] & 0x80:
        if pos + 4 > n:
            return None
        skip += ((payload[pos + 2] & 0x03) << 8) | payload[pos + 3]
        pos += 4
    if pos >= n:
        return None
    start = pos + 1 + skip
    return (payload[pos] & 0x7F, start) if start <= n else None


def parse_remb(p: RtcpPacket) -> tuple[int, list[int]] | None:
    """(bitrate in bits/s, SSRCs) of a REMB (draft-alvestrand-rmcat-remb), or None."""
    d = p.data
    if p.pt != RTCP_PSFB or p.count != PSFB_AFB or len(d) < 20 or d[12:16] != b"REMB":
        return None
    count = d[16]
    exp = d[17] >> 2
    mantissa = ((d[17] & 0x03) << 16) | (d[18] << 8) | d[19]
    ssrcs = [U32.unpack_from(d, 20 + 4 * i)[0] for i in range(count) if 24 + 4 * i <= len(d)]
    return mantissa << exp, ssrcs


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> bytes:
    exp = 0
    while bitrate >= (1 << 18):
        bitrate >>= 1
        exp += 1
    body = (U32.pack(sender_ssrc) + U32.pack(0) + b"REMB" + bytes([len(ssrcs), (exp << 2) | (bitrate >> 16)])
            + U16.pack(bitrate & 0xFFFF) + b"".join(U32.pack(s) for s in ssrcs))
    return RTCP_HEADER.pack(0x80 | PSFB_AFB, RTCP_PSFB, len(body) // 4) + body


def abs_send_time_extension(ext_id: int, unix_time: float) -> bytes:
    """A one-byte-form extension block carrying abs-send-time (6.18 fixed point seconds)."""
    value = int(unix_time * (1 << 18)) & 0xFFFFFF
    return ABS_SEND_TIME_BLOCK.pack(ONE_BYTE_PROFILE, 1, (ext_id << 4) | 2, value >> 8, value & 0xFF)


ABS_SEND_TIME_BLOCK = struct.Struct("!HHBHB")


def build_bye(ssrcs: list[int]) -> bytes:
    ssrcs = ssrcs[:31]
    return RTCP_HEADER.pack(0x80 | len(ssrcs), RTCP_BYE, len(ssrcs)) + b"".join(U32.pack(s) for s in ssrcs)


def ntp_now(unix_time: float) -> int:
    """A 64-bit NTP timestamp for a Unix time."""
    secs = unix_time + 2208988800
    return (int(secs) << 32) | int((secs % 1) * (1 << 32))


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (LSR / DLSR units)."""
    return (ntp >> 16) & 0xFFFFFFFF


def seq_newer(a: int, b: int) -> bool:
    """Whether 16-bit sequence number a comes after b (RFC 1982 arithmetic)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000
