"""Ingress cores without sockets: AMF0, the RTMP server connection, FLV bodies, RTP (de)packetizers,
LiveKit's presets and validation rules, layer fitting, and the transcoders on real PyAV streams."""

from __future__ import annotations

import fractions
import hashlib
import hmac
import itertools
import os
import struct
import time

import av
import numpy as np
import pytest
from livekit.protocol import ingress as pi
from livekit.protocol import models as pm

from lkserver.ingress import amf0, flv
from lkserver.ingress import info as rules
from lkserver.ingress.depacketize import FrameAssembler, h264_nals, sps_size
from lkserver.ingress.packetize import (
    RtpPacketizer,
    h264_payloads,
    split_annexb,
    split_avcc,
    vp8_payloads,
)
from lkserver.ingress.rtmp import (
    _FMS_KEY,
    _FP_KEY,
    AUDIO,
    COMMAND_AMF0,
    DATA_AMF0,
    HANDSHAKE_SIZE,
    SET_CHUNK_SIZE,
    VIDEO,
    Connected,
    Media,
    MetaData,
    PublishRequested,
    RtmpError,
    RtmpServerConnection,
    Unpublished,
    encode_chunks,
    find_client_digest,
)
from lkserver.ingress.transcode import (
    AudioTranscoder,
    VideoTranscoder,
    fit_layers,
    make_decoder,
    packet,
)
from lkserver.rtc.forward import h264_is_keyframe, vp8_is_keyframe
from lkserver.rtc.rtp import parse_rtp

# -- AMF0 ------------------------------------------------------------------------------------------


def test_amf0_round_trip_and_bounds():
    values = ["connect", 1.0, {"app": "x", "tcUrl": "rtmp://h/x", "nested": {"a": [1.0, True, None]}},
              amf0.EcmaArray(width=1280.0, height=720.0), "é" * 70000, False]
    assert amf0.decode_all(amf0.encode(*values)) == values
    with pytest.raises(amf0.AmfError):
        amf0.decode_all(b"\x02\x00\x10abc")  # truncated string
    with pytest.raises(amf0.AmfError):
        amf0.decode_all(b"\x03" * 100)  # nested too deeply
    with pytest.raises(amf0.AmfError):
        amf0.decode_all(b"\x0d")  # unsupported marker
    with pytest.raises(amf0.AmfError):
        amf0.decode_all(b"\x0a" + struct.pack("!I", 10**9))  # huge strict array


# -- RTMP server connection ---------------------------------------------------------------------------

class Client:
    """Just enough of an RTMP publisher to drive the server core."""

    def __init__(self, digest: bool = False, chunk_size: int = 128) -> None:
        self.conn = RtmpServerConnection()
        self.chunk_size = chunk_size
        self.received = bytearray()
        self.events: list = []
        c1 = bytearray(os.urandom(HANDSHAKE_SIZE))
        c1[0:4] = b"\0\0\0\0"
        if digest:
            c1[4:8] = bytes((9, 0, 124, 2))
            offset = (sum(c1[772:776]) % 728) + 776
            c1[offset:offset + 32] = hmac.new(_FP_KEY[:30], bytes(c1[:offset] + c1[offset + 32:]),
                                              hashlib.sha256).digest()
        else:
            c1[4:8] = bytes(4)
        self.c1 = bytes(c1)

    def send(self, data: bytes) -> list:
        evs = self.conn.receive_data(data)
        self.received += self.conn.data_to_send()
        self.events += evs
        return evs

    def message(self, csid: int, type_id: int, stream_id: int, payload: bytes, ts: int = 0) -> list:
        return self.send(encode_chunks(csid, type_id, stream_id, ts, payload, self.chunk_size))

    def command(self, *values, stream_id: int = 0) -> list:
        return self.message(3, COMMAND_AMF0, stream_id, amf0.encode(*values))

    def handshake(self) -> bytes:
        self.send(bytes((3,)) + self.c1)
        s0s1s2 = bytes(self.received)
        self.received.clear()
        self.send(s0s1s2[1:1 + HANDSHAKE_SIZE])  # C2 echoes S1
        return s0s1s2

    def publish(self, name: str = "live/KEY") -> PublishRequested:
        self.handshake()
        self.command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"})
        self.command("releaseStream", 2.0, None, name)
        self.command("FCPublish", 3.0, None, name)
        self.command("createStream", 4.0, None)
        evs = self.command("publish", 5.0, None, name, "live", stream_id=1)
        return next(e for e in evs if isinstance(e, PublishRequested))


def server_commands(data: bytes, chunk_size: int = 128) -> list[list]:
    """The AMF0 commands in a server byte stream (parsed with a second server core's chunk reader)."""
    reader = RtmpServerConnection()
    reader.state = reader.state.__class__.OPEN
    reader._in_chunk_size = chunk_size
    out = []

    def capture(type_id, stream_id, timestamp, payload, events):
        if type_id == COMMAND_AMF0:
            out.append(amf0.decode_all(payload))
        elif type_id == SET_CHUNK_SIZE:
            reader._in_chunk_size = struct.unpack("!I", payload[:4])[0]

    reader._on_message = capture  # type: ignore[method-assign]
    reader.receive_data(data)
    return out


def test_plain_handshake_echoes_c1():
    c = Client()
    s = c.handshake()
    assert len(s) == 1 + 2 * HANDSHAKE_SIZE and s[0] == 3
    assert s[1 + HANDSHAKE_SIZE:] == c.c1


def test_digest_handshake_answers_with_server_digests():
    c = Client(digest=True)
    assert find_client_digest(c.c1) is not None
    s = c.handshake()
    s1, s2 = s[1:1 + HANDSHAKE_SIZE], s[1 + HANDSHAKE_SIZE:]
    offset = (sum(s1[772:776]) % 728) + 776
    expected = hmac.new(_FMS_KEY[:36], s1[:offset] + s1[offset + 32:], hashlib.sha256).digest()
    assert s1[offset:offset + 32] == expected
    client_digest = find_client_digest(c.c1)[1]
    key = hmac.new(_FMS_KEY, client_digest, hashlib.sha256).digest()
    assert s2[-32:] == hmac.new(key, s2[:-32], hashlib.sha256).digest()


def test_publish_flow_and_media():
    c = Client()
    req = c.publish("live/KEY?token=1")
    assert req.stream_key == "KEY" and req.app == "live"
    assert isinstance(c.events[0], Connected) and c.events[0].app == "live"
    cmds = server_commands(bytes(c.received))
    assert cmds[0][0] == "_result" and cmds[0][3]["code"] == "NetConnection.Connect.Success"
    assert ["_result", 4.0, None, 1.0] in cmds  # createStream -> stream 1
    c.received.clear()
    # media before the publish is accepted is ignored
    assert c.message(6, VIDEO, 1, b"\x17\x01\0\0\0abc", ts=10) == []
    c.conn.accept_publish()
    c.received += c.conn.data_to_send()
    status = server_commands(bytes(c.received), 4096)[-1]
    assert status[0] == "onStatus" and status[3]["code"] == "NetStream.Publish.Start"
    meta = amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(width=1280.0, framerate=30.0))
    evs = c.message(4, DATA_AMF0, 1, meta)
    assert isinstance(evs[0], MetaData) and evs[0].values["width"] == 1280.0
    # a message larger than the chunk size, then a format-3 continuation message
    big = b"\x17\x01\0\0\0" + os.urandom(1000)
    evs = c.message(6, VIDEO, 1, big, ts=40)
    assert len(evs) == 1 and evs[0].payload == big and evs[0].timestamp == 40
    evs = c.message(4, AUDIO, 1, b"\xaf\x01" + b"x" * 300, ts=23)
    assert isinstance(evs[0], Media) and evs[0].kind == "audio"
    evs = c.command("FCUnpublish", 6.0, None, "KEY")
    assert isinstance(evs[0], Unpublished)


def test_chunk_headers_deltas_and_extended_timestamps():
    c = Client()
    c.publish()
    c.conn.accept_publish()
    c.conn.data_to_send()
    # format 0 with an extended timestamp, split across chunks: the continuation repeats it
    ts = 0x1234567
    payload = b"\x17\x01\0\0\0" + bytes(400)
    data = encode_chunks(6, VIDEO, 1, ts, payload, 128)
    evs = []
    for i in range(0, len(data), 7):  # byte by byte-ish: the parser waits for whole chunks
        evs += c.send(data[i:i + 7])
    assert [e.timestamp for e in evs] == [ts] and evs[0].payload == payload
    # format 1 (delta, new length) then format 2 (delta only) then format 3 (same delta)
    hdr1 = bytes((0x40 | 6,)) + (33).to_bytes(3, "big") + (6).to_bytes(3, "big") + bytes((VIDEO,)) + b"\x27\x01\0\0\0x"
    hdr2 = bytes((0x80 | 6,)) + (33).to_bytes(3, "big") + b"\x27\x01\0\0\0y"
    hdr3 = bytes((0xC0 | 6,)) + b"\x27\x01\0\0\0z"
    evs = c.send(hdr1 + hdr2 + hdr3)
    assert [e.timestamp for e in evs] == [ts + 33, ts + 66, ts + 99]
    assert [e.payload[-1:] for e in evs] == [b"x", b"y", b"z"]
    # the peer raises its chunk size
    c.message(2, SET_CHUNK_SIZE, 0, struct.pack("!I", 4096))
    c.chunk_size = 4096
    evs = c.message(6, VIDEO, 1, b"\x27\x01\0\0\0" + bytes(3000), ts=5)
    assert len(evs) == 1 and len(evs[0].payload) == 3005


def test_reject_publish_closes_after_status():
    c = Client()
    c.publish()
    c.conn.reject_publish("ingress does not exist")
    status = server_commands(c.conn.data_to_send(), 4096)[-1]
    assert status[3]["level"] == "error" and status[3]["description"] == "ingress does not exist"
    assert c.conn.close_after_send


@pytest.mark.parametrize("garbage", [
    b"\x06" + bytes(HANDSHAKE_SIZE),  # RTMPE version
    b"\x03" + bytes(HANDSHAKE_SIZE) + bytes(HANDSHAKE_SIZE) + b"\x43" + bytes(7),  # format 1 on a new chunk stream
    b"\x03" + bytes(HANDSHAKE_SIZE) + bytes(HANDSHAKE_SIZE) + b"\x03" + bytes(3) + b"\xff\xff\xff\x14" + bytes(4),
    b"\x03" + bytes(HANDSHAKE_SIZE) + bytes(HANDSHAKE_SIZE) + b"\x03" + bytes(3) + b"\x00\x00\x05\x63" + bytes(9),
    b"\x03" + bytes(HANDSHAKE_SIZE) + bytes(HANDSHAKE_SIZE) + b"\x03" + bytes(3) + b"\x00\x00\x04\x14" + bytes(4)
    + b"\x0d\x0d\x0d\x0d",
])
def test_malformed_bytes_raise(garbage):
    conn = RtmpServerConnection(max_message_size=1 << 20)
    with pytest.raises(RtmpError):
        conn.receive_data(garbage)
    assert conn.receive_data(b"more") == []  # closed: nothing further is read


def test_too_many_chunk_streams():
    c = Client()
    c.handshake()
    with pytest.raises(RtmpError, match="too many chunk streams"):
        for csid in range(3, 200):
            c.message(csid, AUDIO, 1, b"\xaf\x01x")


# -- FLV bodies ----------------------------------------------------------------------------------------

def test_flv_bodies():
    v = flv.parse_video(b"\x17\x00\x00\x00\x00\x01\x42\xc0\x1f")
    assert v.config and v.codec == "h264" and v.data == b"\x01\x42\xc0\x1f"
    v = flv.parse_video(b"\x27\x01\x00\x00\x42" + b"NALU")
    assert not v.keyframe and v.cts == 0x42 and v.data == b"NALU"
    v = flv.parse_video(b"\x17\x01\xff\xff\xfe" + b"N")
    assert v.keyframe and v.cts == -2
    assert flv.parse_video(b"\x57\x00") is None  # video info frame
    ex = flv.parse_video(bytes((0x80 | 0x10 | 1,)) + b"avc1" + b"\x00\x00\x21" + b"N")
    assert ex.keyframe and ex.cts == 0x21 and ex.data == b"N"
    with pytest.raises(flv.FlvError, match="hvc1"):
        flv.parse_video(bytes((0x90,)) + b"hvc1")
    with pytest.raises(flv.FlvError, match="VP6"):
        flv.parse_video(b"\x14\x00")
    a = flv.parse_audio(b"\xaf\x00\x12\x10")
    assert a.config and a.codec == "aac" and flv.aac_config(a.data) == (44100, 2)
    assert flv.aac_config(bytes.fromhex("1190")) == (48000, 2)
    assert flv.parse_audio(b"\x2f" + b"mp3").codec == "mp3"
    with pytest.raises(flv.FlvError, match="Speex"):
        flv.parse_audio(b"\xb2x")


# -- RTP packetizers and depacketizers ---------------------------------------------------------------

def _h264_access_unit() -> bytes:
    sps, pps = b"\x67\x42\xc0\x1f" + bytes(10), b"\x68\xce\x3c\x80"
    idr = b"\x65" + os.urandom(5000)
    return b"\x00\x00\x00\x01\x09\xf0" + b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps + b"\x00\x00\x00\x01" + idr


def test_h264_payloads_stap_a_and_fu_a():
    au = _h264_access_unit()
    nals = split_annexb(au)
    assert [n[0] & 0x1F for n in nals] == [9, 7, 8, 5]
    payloads = h264_payloads(au, 1200)
    assert payloads[0][0] & 0x1F == 24  # SPS + PPS aggregated (the AUD is dropped)
    assert all(p[0] & 0x1F == 28 for p in payloads[1:])
    assert payloads[1][1] & 0x80 and payloads[-1][1] & 0x40
    assert all(len(p) <= 1200 for p in payloads)
    assert h264_is_keyframe(payloads[0]) and h264_is_keyframe(payloads[1])
    # back through the depacketizer: the same NAL units
    out = []
    for p in payloads:
        for nal, start, _ in h264_nals(p):
            if start:
                out.append(bytearray(nal))
            else:
                out[-1] += nal
    assert [bytes(n) for n in out] == nals[1:]
    assert split_avcc(b"".join(struct.pack("!I", len(n)) + n for n in nals)) == nals


def test_vp8_payloads_descriptor():
    frame = b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01" + os.urandom(3000)  # a 640x480 keyframe
    payloads = vp8_payloads(frame, 0x1234, 1200)
    assert payloads[0][:4] == b"\x90\x80\x92\x34" and payloads[1][:2] == b"\x80\x80"
    assert vp8_is_keyframe(payloads[0]) and not vp8_is_keyframe(payloads[1])
    assert b"".join(p[4:] for p in payloads) == frame


def test_rtp_packetizer_headers_and_reassembly_with_loss_and_reorder():
    pk = RtpPacketizer(0xABCD, 96, 90000, "vp8")
    frames = [b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01" + os.urandom(2500)] + \
             [b"\x11" + os.urandom(1500) for _ in range(3)]
    packets = [pk.packetize(f, 3000 * i) for i, f in enumerate(frames)]
    hs = [parse_rtp(p) for ps in packets for p in ps]
    assert {h.ssrc for h in hs} == {0xABCD} and {h.pt for h in hs} == {96}
    assert all(((b.seq - a.seq) & 0xFFFF) == 1 for a, b in itertools.pairwise(hs))
    assert [h.marker for h in hs] == [m for ps in packets for m in [0] * (len(ps) - 1) + [1]]
    asm = FrameAssembler("vp8")
    flat = [p for ps in packets for p in ps]
    flat[2], flat[3] = flat[3], flat[2]  # reordered
    out = []
    for p in flat:
        h = parse_rtp(p)
        out += asm.push(h.seq, h.ts, bool(h.marker), p[h.payload_offset:])
    assert [f.data for f in out] == frames and out[0].keyframe
    # a lost packet drops its frame and everything until the next keyframe, which is asked for once
    more = [pk.packetize(f, 12000 + 3000 * i) for i, f in enumerate(frames)]
    lossy = [p for ps in more for p in ps]
    del lossy[1]
    out = []
    for p in lossy + [q for q in pk.packetize(frames[0], 30000)]:
        h = parse_rtp(p)
        out += asm.push(h.seq, h.ts, bool(h.marker), p[h.payload_offset:])
    for _ in range(20):  # the missing packet never arrives: the window moves on
        for p in pk.packetize(b"\x11" + bytes(10), 40000):
            h = parse_rtp(p)
            out += asm.push(h.seq, h.ts, bool(h.marker), p[h.payload_offset:])
    assert out and out[0].keyframe and out[0].timestamp == 30000 and asm.keyframe_requests == 1


@pytest.mark.parametrize("size, profile", [((1280, 720), "baseline"), ((640, 360), "high"), ((854, 480), "main"),
                                           ((1920, 1080), "high")])
def test_sps_size(size, profile):
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = *size, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    enc.options = {"preset": "ultrafast", "profile": profile}
    frame = av.VideoFrame.from_ndarray(np.zeros((size[1], size[0], 3), np.uint8), format="rgb24").reformat(
        format="yuv420p")
    frame.pts = 0
    data = b"".join(bytes(p) for p in [*enc.encode(frame), *enc.encode(None)])
    sps = next(n for n in split_annexb(data) if n[0] & 0x1F == 7)
    assert sps_size(sps) == size
    assert sps_size(sps[:4]) is None  # truncated


# -- LiveKit's rules -----------------------------------------------------------------------------------

def test_presets_as_documented():
    opts = rules.video_preset_options(pi.IngressVideoEncodingPreset.H264_720P_30FPS_3_LAYERS)
    assert opts.video_codec == pm.VideoCodec.H264_BASELINE and opts.frame_rate == 30
    assert [(v.quality, v.width, v.height, v.bitrate) for v in opts.layers] == [
        (pm.VideoQuality.HIGH, 1280, 720, 1_900_000), (pm.VideoQuality.MEDIUM, 640, 360, 671_751),
        (pm.VideoQuality.LOW, 320, 180, 237_500)]
    assert [len(rules.video_preset_options(p).layers) for p in sorted(rules.VIDEO_PRESETS)] == \
        [3, 3, 2, 1, 1, 3, 3, 2, 1, 1]
    top = {p: rules.video_preset_options(p).layers[0] for p in rules.VIDEO_PRESETS}
    P = pi.IngressVideoEncodingPreset
    assert (top[P.H264_1080P_30FPS_3_LAYERS].width, top[P.H264_1080P_30FPS_3_LAYERS].bitrate) == (1920, 3_500_000)
    assert (top[P.H264_540P_25FPS_2_LAYERS].height, top[P.H264_540P_25FPS_2_LAYERS].bitrate) == (540, 1_000_000)
    assert rules.video_preset_options(P.H264_540P_25FPS_2_LAYERS).frame_rate == 25
    assert [top[p].bitrate for p in (P.H264_720P_30FPS_3_LAYERS_HIGH_MOTION, P.H264_1080P_30FPS_3_LAYERS_HIGH_MOTION,
                                     P.H264_540P_25FPS_2_LAYERS_HIGH_MOTION)] == [2_500_000, 4_500_000, 1_300_000]
    a = rules.audio_preset_options(pi.IngressAudioEncodingPreset.OPUS_MONO_64KBS)
    assert (a.audio_codec, a.channels, a.bitrate) == (pm.AudioCodec.OPUS, 1, 64_000)
    default = rules.audio_encoding(pi.IngressAudioOptions())
    assert (default.channels, default.bitrate) == (2, 96_000)
    custom = rules.video_encoding(pi.IngressVideoOptions(options=pi.IngressVideoEncodingOptions(
        video_codec=pm.VideoCodec.VP8, layers=[pm.VideoLayer(quality=pm.VideoQuality.HIGH, width=640, height=360)])))
    assert custom.frame_rate == 30 and custom.layers[0].bitrate == rules.bitrate_for(3_500_000, 1920, 1080, 30, 640,
                                                                                     360, 30)
    custom = rules.video_encoding(pi.IngressVideoOptions(options=pi.IngressVideoEncodingOptions()))
    assert custom.video_codec == pm.VideoCodec.H264_BASELINE and [v.width for v in custom.layers] == [1280, 640, 320]


def test_fit_layers_to_the_source():
    layers = rules.video_preset_options(pi.IngressVideoEncodingPreset.H264_720P_30FPS_3_LAYERS).layers
    assert [(v.width, v.height) for v in fit_layers(list(layers), 1920, 1080)] == [(1280, 720), (640, 360), (320, 180)]
    # smaller source: no upscaling, and no layer beyond the first one that covers the source
    assert [(v.width, v.height) for v in fit_layers(list(layers), 640, 360)] == [(640, 360), (320, 180)]
    # another aspect ratio keeps its shape, sizes rounded up to even
    assert [(v.width, v.height) for v in fit_layers(list(layers), 1080, 1920)] == [(406, 720), (202, 360), (102, 180)]


def _create(**kw) -> pi.CreateIngressRequest:
    kw.setdefault("participant_identity", "p")
    return pi.CreateIngressRequest(**kw)


@pytest.mark.parametrize("req, message", [
    (_create(input_type=7), "invalid ingress type"),
    (_create(input_type=pi.RTMP_INPUT, participant_identity=""), "invalid ingress: no participant identity"),
    (_create(input_type=pi.URL_INPUT, room_name="r"), "invalid ingress: missing URL parameter"),
    (_create(input_type=pi.URL_INPUT, url="ftp://x/y", room_name="r"), "invalid ingress: invalid url scheme ftp"),
    (_create(input_type=pi.URL_INPUT, url="http://x/y"), "invalid ingress: no room name"),
    (_create(input_type=pi.URL_INPUT, url="http://x/y", room_name="r", enabled=False),
     "invalid ingress: disabled non reusable ingress"),
    (_create(input_type=pi.RTMP_INPUT, enable_transcoding=False),
     "invalid transcoding bypass configuration: bypassing transcoding impossible with selected input type"),
    (_create(input_type=pi.WHIP_INPUT, video=pi.IngressVideoOptions(preset=1)),
     "invalid transcoding bypass configuration: video encoding options must be empty if transcoding is disabled"),
    (_create(input_type=pi.RTMP_INPUT, video=pi.IngressVideoOptions(source=pm.TrackSource.MICROPHONE)),
     "invalid video parameters: invalid track source"),
    (_create(input_type=pi.RTMP_INPUT, audio=pi.IngressAudioOptions(source=pm.TrackSource.CAMERA)),
     "invalid audio parameters: invalid track source"),
    (_create(input_type=pi.RTMP_INPUT, video=pi.IngressVideoOptions(preset=42)),
     "invalid video parameters: invalid preset"),
    (_create(input_type=pi.RTMP_INPUT, video=pi.IngressVideoOptions(options=pi.IngressVideoEncodingOptions(
        video_codec=pm.VideoCodec.H264_HIGH))), "invalid video parameters: video codec unsupported"),
    (_create(input_type=pi.RTMP_INPUT, video=pi.IngressVideoOptions(options=pi.IngressVideoEncodingOptions(
        layers=[pm.VideoLayer(width=641, height=360)]))), "invalid ingress: layer width must be even"),
    (_create(input_type=pi.RTMP_INPUT, video=pi.IngressVideoOptions(options=pi.IngressVideoEncodingOptions(
        layers=[pm.VideoLayer(width=0, height=360)]))), "invalid video parameters: invalid output media dimensions"),
    (_create(input_type=pi.RTMP_INPUT, video=pi.IngressVideoOptions(options=pi.IngressVideoEncodingOptions(
        layers=[pm.VideoLayer(quality=0, width=640, height=360), pm.VideoLayer(quality=2, width=320, height=180)]))),
     "invalid video parameters: video layers do not have increasing height with increasing quality"),
    (_create(input_type=pi.RTMP_INPUT, video=pi.IngressVideoOptions(options=pi.IngressVideoEncodingOptions(
        layers=[pm.VideoLayer(quality=1, width=640, height=360), pm.VideoLayer(quality=1, width=320, height=180)]))),
     "invalid video parameters: more than one layer with the same quality level"),
    (_create(input_type=pi.RTMP_INPUT, audio=pi.IngressAudioOptions(options=pi.IngressAudioEncodingOptions(
        channels=6))), "invalid audio parameters: invalid audio channel count"),
    (_create(input_type=pi.RTMP_INPUT, audio=pi.IngressAudioOptions(options=pi.IngressAudioEncodingOptions(
        audio_codec=pm.AudioCodec.AAC))), "invalid audio parameters: audio codec unsupported"),
])
def test_create_rules(req, message):
    with pytest.raises(rules.IngressError) as e:
        rules.new_info(req, "rtmp://h/x")
    assert e.value.message == message and e.value.code == "invalid_argument"


def test_create_defaults_and_updates():
    rtmp = rules.new_info(_create(input_type=pi.RTMP_INPUT, name="n", room_name="r"), "rtmp://h/x")
    assert rtmp.ingress_id.startswith("IN_") and len(rtmp.stream_key) == 12 and rtmp.url == "rtmp://h/x"
    assert rtmp.reusable and rtmp.enable_transcoding and not rtmp.bypass_transcoding
    assert rtmp.state.status == pi.IngressState.ENDPOINT_INACTIVE and rules.is_enabled(rtmp)
    whip = rules.new_info(_create(input_type=pi.WHIP_INPUT), "http://h/w")
    assert whip.HasField("enable_transcoding") and not whip.enable_transcoding and whip.bypass_transcoding
    url = rules.new_info(_create(input_type=pi.URL_INPUT, url="https://h/a b.mp4", room_name="r"), "")
    assert not url.reusable and url.stream_key == "" and url.url == "https://h/a b.mp4"
    rules.apply_update(pi.UpdateIngressRequest(ingress_id=rtmp.ingress_id, room_name="r2", participant_name="",
                                               enabled=False), rtmp)
    assert (rtmp.room_name, rtmp.name, rtmp.enabled, rules.is_enabled(rtmp)) == ("r2", "n", False, False)
    with pytest.raises(rules.IngressError, match="bypassing transcoding impossible"):
        rules.apply_update(pi.UpdateIngressRequest(enable_transcoding=False), rtmp)
    plan = rules.PublishPlan.of(whip)
    assert not plan.transcode and plan.video.layers[0].width == 1280


# -- transcoders on real streams ---------------------------------------------------------------------

def _h264_stream(w: int, h: int, n: int) -> list[tuple[bytes, int, int, bool]]:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = fractions.Fraction(1, 1000)
    enc.options = {"preset": "ultrafast", "bf": "2"}
    out = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, (i * 16) % w:] = 220
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        f.pts, f.time_base = i * 1000 // 30, enc.time_base
        out += [(bytes(p), p.pts, p.dts, p.is_keyframe) for p in enc.encode(f)]
    out += [(bytes(p), p.pts, p.dts, p.is_keyframe) for p in enc.encode(None)]
    return out


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_video_transcoder_layers_rate_and_keyframes(codec):
    src = _h264_stream(1280, 720, 60)
    out, errors, layer_sets = [], [], []
    layers = list(rules.video_preset_options(pi.IngressVideoEncodingPreset.H264_720P_30FPS_3_LAYERS).layers)
    tx = VideoTranscoder(make_decoder("h264"), layers, codec, 15.0, out.append, errors.append,
                         on_layers=layer_sets.append, live=False)
    tx.start()
    for i, (data, pts, dts, key) in enumerate(src):
        if i == 30:
            deadline = time.monotonic() + 30
            while len(out) < 30 and time.monotonic() < deadline:  # the first frames are out
                time.sleep(0.01)
            tx.request_keyframe(1)
        tx.push(packet(data, pts, fractions.Fraction(1, 1000), dts), key)
    tx.close()
    tx.join(60)
    assert not errors and len(layer_sets) == 1
    by_layer = {i: [f for f in out if f.layer == i] for i in range(3)}
    assert [(f[0].width, f[0].height) for f in by_layer.values()] == [(1280, 720), (640, 360), (320, 180)]
    assert all(abs(len(fs) - 30) <= 1 for fs in by_layer.values())  # 60 frames at 30 fps -> 15 fps
    times = [f.time for f in by_layer[0]]
    assert times == sorted(times) and abs(times[-1] - 59 / 30) < 0.1
    assert by_layer[1][0].keyframe and sum(f.keyframe for f in by_layer[1]) > sum(f.keyframe for f in by_layer[2])
    # what the encoder made decodes again
    dec = av.CodecContext.create("h264" if codec == "h264" else "libvpx", "r")
    frames = [fr for f in by_layer[2] for fr in dec.decode(av.Packet(f.data))]
    assert frames and (frames[0].width, frames[0].height) == (320, 180)


def test_audio_transcoder_aac_to_opus():
    enc = av.CodecContext.create("aac", "w")
    enc.sample_rate, enc.layout, enc.format = 44100, "stereo", "fltp"
    enc.time_base = fractions.Fraction(1, 44100)
    src, n = [], 0
    for _ in range(130):
        t = (np.arange(1024) + n) / 44100
        x = (np.sin(2 * np.pi * 880 * t) * 0.3).astype(np.float32)
        fr = av.AudioFrame.from_ndarray(np.stack([x, x]), format="fltp", layout="stereo")
        fr.sample_rate, fr.pts = 44100, n
        n += 1024
        src += [(bytes(p), p.pts) for p in enc.encode(fr)]
    out, errors = [], []
    tx = AudioTranscoder(make_decoder("aac", enc.extradata), 1, 64000, False, out.append, errors.append, live=False)
    tx.start()
    for data, pts in src:
        tx.push(packet(data, pts, fractions.Fraction(1, 44100)))
    tx.close()
    tx.join(30)
    assert not errors and len(out) > 140
    # 20 ms apart (the encoder's priming shifts the first one)
    assert all(abs((b.time - a.time) - 0.02) < 1e-9 for a, b in itertools.pairwise(out[1:]))
    dec = av.CodecContext.create("libopus", "r")
    pcm = np.concatenate([fr.to_ndarray().reshape(-1, len(fr.layout.channels))[:, 0]
                          for f in out for fr in dec.decode(av.Packet(f.data))]).astype(float)
    pcm = pcm[len(pcm) // 4:]
    peak = np.fft.rfftfreq(len(pcm), 1 / 48000)[int(np.argmax(np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))))]
    assert abs(peak - 880) < 5
