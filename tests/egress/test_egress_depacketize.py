"""RTP depacketizers and the reorder buffer, without sockets (RFC 7587, RFC 7741, RFC 6184)."""

from __future__ import annotations

import struct

from lkserver.egress.depacketize import (
    H264Depacketizer,
    OpusDepacketizer,
    RedOpusDepacketizer,
    ReorderBuffer,
    RtpPacket,
    TimestampUnwrapper,
    VP8Depacketizer,
    vp8_descriptor_length,
)


def rtp(seq: int, ts: int, payload: bytes, marker: bool = False, pt: int = 96, ext: bool = False) -> bytes:
    b0 = 0x80 | (0x10 if ext else 0)
    head = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, 1234)
    if ext:
        head += struct.pack("!HH", 0xBEDE, 1) + b"\x10\xff\x00\x00"
    return head + payload


def test_rtp_parse_skips_extension_and_padding():
    data = bytearray(rtp(7, 90000, b"abc\x00\x00\x03", marker=True, ext=True))
    data[0] |= 0x20  # padding: the last byte says 3
    p = RtpPacket.parse(bytes(data))
    assert (p.seq, p.timestamp, p.marker, p.pt, p.ssrc, p.payload) == (7, 90000, True, 96, 1234, b"abc")


def test_reorder_buffer_sorts_and_gives_up_on_gaps():
    buf = ReorderBuffer(max_wait=3)
    out = []
    for seq in (10, 12, 11, 13):
        out += buf.push(RtpPacket(seq, 0, False, 96, 1, b""))
    assert [p.seq for p in out] == [10, 11, 12, 13]
    assert buf.push(RtpPacket(9, 0, False, 96, 1, b"")) == []  # late
    out = []
    for seq in (15, 16, 17, 18):  # 14 never comes
        out += buf.push(RtpPacket(seq, 0, False, 96, 1, b""))
    assert out[0] is None and [p.seq for p in out[1:]] == [15, 16, 17, 18] and buf.lost == 1
    # sequence numbers wrap
    buf = ReorderBuffer()
    got = [p.seq for s in (65534, 65535, 0, 1) for p in buf.push(RtpPacket(s, 0, False, 96, 1, b""))]
    assert got == [65534, 65535, 0, 1]


def test_timestamp_unwrap():
    u = TimestampUnwrapper()
    assert [u.unwrap(t) for t in (0xFFFFFF00, 0x00000100, 0xFFFFFFF0)] == [0xFFFFFF00, (1 << 32) + 0x100,
                                                                           0xFFFFFFF0]


def test_opus_payload_is_the_frame():
    d = OpusDepacketizer()
    frames = d.push(RtpPacket(1, 960, True, 111, 1, b"\xfc\x01\x02"))
    assert [(f.timestamp, f.data) for f in frames] == [(960, b"\xfc\x01\x02")]
    assert d.push(None) == []


def vp8_key(w: int = 640, h: int = 360) -> bytes:
    # frame tag (key frame, show_frame), start code, width/height
    return bytes([0x50, 0x2A, 0x00, 0x9D, 0x01, 0x2A]) + struct.pack("<HH", w, h) + b"\x00" * 20


def test_vp8_descriptor_forms():
    assert vp8_descriptor_length(b"\x10\xAA") == 1
    assert vp8_descriptor_length(b"\x90\x80\x05\xAA") == 3  # X, I with 7-bit picture id
    assert vp8_descriptor_length(b"\x90\x80\x85\x05\xAA") == 4  # 15-bit picture id
    assert vp8_descriptor_length(b"\x90\xE0\x85\x05\x01\x20\xAA") == 6  # I(15) L T


def test_vp8_frames_join_partitions_and_wait_for_keyframes():
    d = VP8Depacketizer()
    key = vp8_key()
    # a delta frame first: dropped until a keyframe
    assert d.push(RtpPacket(1, 100, True, 96, 1, b"\x90\x80\x01" + b"\x01\x02\x03")) == []
    out = d.push(RtpPacket(2, 200, False, 96, 1, b"\x90\x80\x02" + key[:10]))
    out += d.push(RtpPacket(3, 200, True, 96, 1, b"\x80\x80\x02" + key[10:]))  # S=0 continuation
    assert [(f.timestamp, f.data, f.keyframe) for f in out] == [(200, key, True)]
    out = d.push(RtpPacket(4, 300, True, 96, 1, b"\x90\x80\x03" + b"\x01\x00\x00\x01"))
    assert [(f.keyframe, f.data) for f in out] == [(False, b"\x01\x00\x00\x01")]
    # a loss inside a picture drops it and waits for the next keyframe
    d.push(RtpPacket(5, 400, False, 96, 1, b"\x90\x80\x04" + b"\x01\x01\x01"))
    d.push(None)
    assert d.push(RtpPacket(7, 400, True, 96, 1, b"\x80\x80\x04" + b"\x02")) == []
    assert d.need_keyframe
    assert d.push(RtpPacket(8, 500, True, 96, 1, b"\x90\x80\x05" + b"\x01\x00\x00\x02")) == []
    assert [f.keyframe for f in d.push(RtpPacket(9, 600, True, 96, 1, b"\x10" + key))] == [True]


def test_h264_single_stap_a_and_fu_a():
    sps, pps = b"\x67\x42\x00\x1f\xaa", b"\x68\xce\x3c\x80"
    idr = b"\x65" + bytes(range(1, 200))
    d = H264Depacketizer()
    stap = b"\x78" + struct.pack("!H", len(sps)) + sps + struct.pack("!H", len(pps)) + pps
    out = d.push(RtpPacket(1, 3000, False, 102, 1, stap))
    fu_indicator = (idr[0] & 0xE0) | 28
    out += d.push(RtpPacket(2, 3000, False, 102, 1, bytes([fu_indicator, 0x80 | 5]) + idr[1:100]))
    out += d.push(RtpPacket(3, 3000, True, 102, 1, bytes([fu_indicator, 0x40 | 5]) + idr[100:]))
    sc = b"\x00\x00\x00\x01"
    assert [(f.timestamp, f.data, f.keyframe) for f in out] == [(3000, sc + sps + sc + pps + sc + idr, True)]
    # a single NAL unit (non-IDR slice) is a delta frame
    out = d.push(RtpPacket(4, 6000, True, 102, 1, b"\x41\x9a\x00"))
    assert [(f.data, f.keyframe) for f in out] == [(sc + b"\x41\x9a\x00", False)]
    # an FU-A missing its end is dropped; the depacketizer wants a keyframe
    d.push(RtpPacket(5, 9000, False, 102, 1, bytes([0x7C, 0x80 | 1]) + b"\x01"))
    assert d.push(RtpPacket(6, 12000, True, 102, 1, b"\x41\x9a\x01")) == [] and d.need_keyframe


def red(primary: bytes, redundant: list[tuple[int, bytes]] = ()) -> bytes:
    head = b"".join(bytes([0x80 | 111, off >> 6, ((off & 0x3F) << 2) | (len(d) >> 8), len(d) & 0xFF])
                    for off, d in redundant)
    return head + bytes([111]) + b"".join(d for _, d in redundant) + primary


def test_red_primary_blocks_and_recovery_of_a_lost_packet():
    d = RedOpusDepacketizer()
    out = d.push(RtpPacket(1, 960, True, 63, 1, red(b"A")))
    out += d.push(RtpPacket(2, 1920, True, 63, 1, red(b"B", [(960, b"A")])))  # A again: already had it
    d.push(None)  # packet 3 (timestamp 2880, "C") is lost ...
    out += d.push(RtpPacket(4, 3840, True, 63, 1, red(b"D", [(960, b"C")])))  # ... its copy rides here
    assert [(f.timestamp, f.data) for f in out] == [(960, b"A"), (1920, b"B"), (2880, b"C"), (3840, b"D")]
    assert d.push(RtpPacket(5, 4800, True, 63, 1, b"\x80\x01")) == []  # truncated: ignored
