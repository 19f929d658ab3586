"""The realtime protocol cores without sockets: SDP, RTP/RTCP, forwarding, ICE-lite, DTLS-SRTP.

The SDP fixtures are offers captured from the official Python realtime SDK (Rust/libwebrtc).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from aioice import stun
from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate, certificate_digest
from OpenSSL import SSL
from livekit.protocol import models as pm
from pylibsrtp import Policy, Session

from lkserver.rtc import negotiation, rtp, sdp
from lkserver.rtc.dtls import DtlsEndpoint
from lkserver.rtc import quality
from lkserver.rtc.forward import DownTrack, TrackReceiver, UpTrack, h264_is_keyframe, vp8_is_keyframe
from lkserver.rtc.ice import IceLiteAgent, is_stun, local_ufrag_of, parse_binding_request
from lkserver.rtc.srtp import SrtpContext

DATA = Path(__file__).parent / "data"


# -- SDP ------------------------------------------------------------------------------------------

def test_parse_official_client_offers():
    join = sdp.parse((DATA / "rust_sdk_v1_join_offer.sdp").read_text())
    assert [m.kind for m in join.media] == ["audio"] * 3 + ["video"] * 3 + ["application"]
    assert all(m.direction == "recvonly" for m in join.media[:6])
    assert join.bundle == [m.mid for m in join.media]
    ufrag, pwd = join.ice_credentials()
    assert ufrag and len(pwd) >= 22
    assert join.dtls_fingerprints()[0][0] == "sha-256" and join.dtls_setup() == "actpass"
    audio = join.media[0]
    assert audio.codecs[0].name == "opus" and audio.codecs[0].clock_rate == 48000
    assert audio.extmap_id(negotiation.EXT_AUDIO_LEVEL) and audio.extmap_id(negotiation.EXT_MID)
    assert join.media[6].sctp_port == 5000

    publish = sdp.parse((DATA / "rust_sdk_v1_publish_offer.sdp").read_text())
    mic, cam = publish.media[7], publish.media[8]
    assert (mic.direction, cam.direction) == ("sendonly", "sendonly")
    assert mic.msid_track and mic.primary_ssrcs() == [1955448108]
    assert cam.codecs[0].name == "VP8"


@pytest.mark.parametrize("text", ["", "garbage", "v=0\r\nm=audio x", "v=0\r\na", "x" * 300000,
                                  "v=0\r\nm=audio 9 RTP/SAVPF 111\r\na=rtpmap:abc opus/48000"])
def test_garbage_sdp_is_an_sdp_error(text):
    with pytest.raises(sdp.SdpError):
        sdp.parse(text)


def test_answer_to_a_publish_offer():
    offer = sdp.parse((DATA / "rust_sdk_v1_publish_offer.sdp").read_text())
    mic = offer.media[7]
    codec = negotiation.choose_publish_codec(mic)
    assert codec is not None and codec.name == "opus"
    section = negotiation.answer_publish_section(mic, codec)
    local = negotiation.LocalParams("ufrag", "p" * 24, ["a=fingerprint:sha-256 AA"],
                                    [sdp.Candidate("1", 1, "udp", 2130706431, "127.0.0.1", 7882, "host")])
    text = negotiation.write_description([section], local, "passive")
    answer = sdp.parse(text)
    assert answer.ice_lite
    m = answer.media[0]
    assert m.direction == "recvonly" and m.setup == "passive" and m.ice_ufrag == "ufrag"
    assert [c.name for c in m.codecs] == ["opus"] and m.codecs[0].pt == codec.pt
    assert {e.uri for e in m.extmaps} == {negotiation.EXT_MID, negotiation.EXT_AUDIO_LEVEL}
    assert m.candidates[0].host == "127.0.0.1" and m.candidates[0].port == 7882


def test_subscriber_codec_matching():
    offer = sdp.parse((DATA / "rust_sdk_v1_join_offer.sdp").read_text())
    video = offer.media[3]
    vp8 = negotiation.codec_for_subscriber(video, negotiation.TrackCodec("video/VP8", 90000))
    assert vp8 is not None and vp8.name == "VP8"
    h264 = negotiation.codec_for_subscriber(video, negotiation.TrackCodec(
        "video/H264", 90000, fmtp="level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"))
    assert h264 is not None and "packetization-mode=1" in h264.fmtp
    assert negotiation.codec_for_subscriber(video, negotiation.TrackCodec("video/AV2", 90000)) is None


# -- RTP / RTCP ----------------------------------------------------------------------------------------

def packet(seq: int = 1, ts: int = 960, ssrc: int = 1234, pt: int = 111, marker: int = 0,
           ext: bytes = b"", payload: bytes = b"\x01\x02\x03", padding: int = 0) -> bytes:
    b0 = 0x80 | (0x10 if ext else 0) | (0x20 if padding else 0)
    body = payload + (b"\x00" * (padding - 1) + bytes([padding]) if padding else b"")
    return rtp.RTP_HEADER.pack(b0, (marker << 7) | pt, seq, ts, ssrc) + ext + body


def test_rtp_parse_rewrite_and_extensions():
    ext = rtp.one_byte_extensions([(1, b"\x85"), (4, b"0")])
    buf = packet(seq=65535, ts=4000000000, marker=1, ext=ext, payload=b"opus")
    h = rtp.parse_rtp(buf)
    assert (h.pt, h.marker, h.seq, h.ts, h.ssrc) == (111, 1, 65535, 4000000000, 1234)
    assert rtp.get_extension(buf, h, 1) == b"\x85" and rtp.get_extension(buf, h, 4) == b"0"
    assert rtp.get_extension(buf, h, 7) is None
    out = rtp.rewrite(buf, h, 96, 65536 + 5, 2**32 + 7, 42)
    h2 = rtp.parse_rtp(out)
    assert (h2.pt, h2.marker, h2.seq, h2.ts, h2.ssrc) == (96, 1, 5, 7, 42)
    assert out[h2.payload_offset:] == b"opus" and not h2.ext_start
    two_byte = struct.pack("!HH", 0x1000, 1) + bytes([3, 1, 0x55, 0])
    hb = rtp.parse_rtp(packet(ext=two_byte))
    assert rtp.get_extension(packet(ext=two_byte), hb, 3) == b"\x55"
    assert rtp.parse_rtp(b"\x80\x6f") is None and rtp.parse_rtp(b"\x00" * 12) is None
    assert rtp.payload_size(packet(padding=4, payload=b""), rtp.parse_rtp(packet(padding=4, payload=b""))) == 0


def test_rtcp_builders_and_parsers():
    sr = rtp.build_sr(7, rtp.ntp_now(1_700_000_000.5), 1234, 10, 1000)
    pli = rtp.build_pli(1, 7)
    rr = rtp.build_rr(1, [rtp.ReportBlock(7, 12, -3, 70000, 5, 99, 100)])
    packets = list(rtp.iter_rtcp(sr + pli + rr))
    assert [p.pt for p in packets] == [rtp.RTCP_SR, rtp.RTCP_PSFB, rtp.RTCP_RR]
    parsed = rtp.parse_sr(packets[0])
    assert parsed.ssrc == 7 and parsed.rtp_ts == 1234 and parsed.packets == 10
    assert rtp.feedback_ssrcs(packets[1]) == (1, 7) and packets[1].count == rtp.PSFB_PLI
    block = rtp.parse_report_blocks(packets[2])[0]
    assert (block.ssrc, block.fraction_lost, block.cumulative_lost, block.highest_seq) == (7, 12, -3, 70000)
    nack = rtp.RTCP_HEADER.pack(0x81, rtp.RTCP_RTPFB, 3) + struct.pack("!IIHH", 1, 7, 100, 0b101)
    assert rtp.parse_nack(next(rtp.iter_rtcp(nack))) == [100, 101, 103]
    assert list(rtp.iter_rtcp(b"\x80\xc8\xff\xff")) == []  # length beyond the buffer
    assert rtp.is_rtcp(sr) and not rtp.is_rtcp(packet())


# -- forwarding ---------------------------------------------------------------------------------------

def test_keyframe_detection():
    # VP8: X=1 S=1 PID=0, I=1 with a 15-bit picture id, then a key frame header (P bit 0)
    assert vp8_is_keyframe(bytes([0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00]))
    assert not vp8_is_keyframe(bytes([0x90, 0x80, 0x81, 0x23, 0x11, 0x02, 0x00]))  # inter frame
    assert not vp8_is_keyframe(bytes([0x80, 0x80, 0x81, 0x23, 0x10]))  # not a partition start
    assert h264_is_keyframe(bytes([0x67, 0x42]))  # SPS
    assert h264_is_keyframe(bytes([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]))  # STAP-A with SPS
    assert h264_is_keyframe(bytes([0x7c, 0x85, 0x88]))  # FU-A start of an IDR
    assert not h264_is_keyframe(bytes([0x7c, 0x05, 0x88]))  # FU-A continuation
    assert not h264_is_keyframe(bytes([0x41, 0x9a]))  # non-IDR slice


def vp8_payload(pid: int, key: bool, tl0: int = 0) -> bytes:
    """A VP8 payload descriptor (X, I with 15-bit picture id, L with TL0PICIDX) and frame header."""
    return bytes([0x90, 0xC0, 0x80 | (pid >> 8), pid & 0xFF, tl0, 0x10 if key else 0x11, 0x02, 0x00])


def feed(receiver: TrackReceiver, layer: int, seq: int, ts: int, payload: bytes, ssrc: int = 0) -> None:
    up = receiver.layers[layer]
    buf = packet(seq=seq, ts=ts, ssrc=up.ssrc, pt=96, payload=payload)
    up.on_rtp(buf, rtp.parse_rtp(buf), 0.0)


def test_downtrack_rewrites_starts_on_keyframes_and_skips_padding():
    sent: list[bytes] = []
    plis: list[int] = []
    receiver = TrackReceiver("TR_V", "vp8", 90000, True, plis.append)
    receiver.add_layer(5555, 0)
    down = DownTrack(receiver, "PA_x", 77, 100, sent.append, lambda b: None)
    receiver.subscribe(down)
    delta, key = vp8_payload(1, False), vp8_payload(2, True)
    for seq, payload in ((10, delta), (11, key), (12, vp8_payload(3, False))):
        feed(receiver, 0, seq, seq * 3000, payload)
    assert plis == [5555] and len(sent) == 2  # the delta frame before the keyframe is held back
    pad = packet(seq=13, ts=39000, ssrc=5555, pt=96, payload=b"", padding=8)
    receiver.layers[0].on_rtp(pad, rtp.parse_rtp(pad), 0.0)
    feed(receiver, 0, 14, 42000, vp8_payload(4, False))
    hs = [rtp.parse_rtp(b) for b in sent]
    assert [h.ssrc for h in hs] == [77, 77, 77] and {h.pt for h in hs} == {100}
    seqs = [h.seq for h in hs]
    assert seqs[1] == (seqs[0] + 1) & 0xFFFF and seqs[2] == (seqs[1] + 1) & 0xFFFF  # no hole for the padding
    assert (hs[1].ts - hs[0].ts) & 0xFFFFFFFF == 3000
    # sender reports are translated into the subscriber's timestamp base
    reports: list[bytes] = []
    down.send_rtcp = reports.append
    receiver.layers[0].on_sender_report(rtp.SenderReport(5555, rtp.ntp_now(1.0), 11 * 3000, 3, 30), 0.0)
    sr = rtp.parse_sr(next(rtp.iter_rtcp(reports[0])))
    assert sr.ssrc == 77 and sr.rtp_ts == hs[0].ts and sr.packets == 3


def test_simulcast_layer_switch_on_keyframe_keeps_one_continuous_stream():
    sent: list[bytes] = []
    plis: list[int] = []
    receiver = TrackReceiver("TR_V", "vp8", 90000, True, plis.append)
    for layer, ssrc in ((0, 100), (1, 101), (2, 102)):
        receiver.add_layer(ssrc, layer, "qhf"[layer])
    down = DownTrack(receiver, "PA_x", 9, 96, sent.append, lambda b: None)
    down.max_layer = 0  # the subscriber's view only needs the low layer
    receiver.subscribe(down)
    # each layer has its own sequence numbers, timestamps and picture ids
    feed(receiver, 0, 1000, 50000, vp8_payload(700, True, tl0=10))
    feed(receiver, 2, 9000, 900000, vp8_payload(30000, True, tl0=200))
    feed(receiver, 0, 1001, 53000, vp8_payload(701, False, tl0=11))
    assert len(sent) == 2  # only layer 0 so far
    down.max_layer = 2
    down.select()
    assert 102 in plis  # a keyframe is asked for on the layer we switch to
    feed(receiver, 0, 1002, 56000, vp8_payload(702, False, tl0=12))
    feed(receiver, 2, 9001, 903000, vp8_payload(30001, False, tl0=201))  # not a keyframe: no switch
    feed(receiver, 2, 9002, 906000, vp8_payload(30002, True, tl0=202))  # switch here
    feed(receiver, 0, 1003, 59000, vp8_payload(703, False, tl0=13))  # old layer no longer forwarded
    feed(receiver, 2, 9003, 909000, vp8_payload(30003, False, tl0=203))
    hs = [rtp.parse_rtp(b) for b in sent]
    assert len(sent) == 5 and down.current.layer == 2
    seqs = [h.seq for h in hs]
    assert all(((b - a) & 0xFFFF) == 1 for a, b in zip(seqs, seqs[1:]))
    assert all(0 < ((b.ts - a.ts) & 0xFFFFFFFF) < 90000 for a, b in zip(hs, hs[1:]))
    pids = []
    for b, h in zip(sent, hs):
        pl = b[h.payload_offset:]
        pids.append(((pl[2] & 0x7F) << 8) | pl[3])
    assert pids == [700, 701, 702, 703, 704]  # picture ids continue across the switch
    tl0s = [b[h.payload_offset + 4] for b, h in zip(sent, hs)]
    assert tl0s == [10, 11, 12, 13, 14]


def test_channel_observer_commits_capacity_on_a_falling_estimate_or_heavy_loss():
    falling = quality.ChannelObserver()
    changes = [falling.update(remb, 1600e3, 1.0 + 0.2 * i) for i, remb in enumerate([1500e3, 1500e3, 1400e3, 900e3])]
    assert changes == [False, False, False, True] and falling.capacity == 900e3
    # an estimate that only stopped rising (still ramping when the link overflowed) ...
    ramping = quality.ChannelObserver()
    for i in range(8):
        assert not ramping.update(80e3 + 1e3 * i, 1500e3, 1.0 + 0.2 * i)  # ... is not congestion
    assert ramping.capacity == float("inf")
    # ... until the subscriber reports heavy loss for a second: capacity is what still arrives
    assert not ramping.update(88e3, 1500e3, 3.0, loss=0.7)
    assert ramping.update(88e3, 1500e3, 4.1, loss=0.7)
    assert round(ramping.capacity) == 405e3  # 0.9 x usage x (1 - loss)
    # a trial raise that meets heavy loss goes back to where it was tried from, and waits longer
    ramping.update(88e3, 300e3, 6.2)  # quiet for 2 s: raised by 40 %
    assert round(ramping.capacity) == 567e3 and round(ramping.trial_from) == 405e3
    ramping.update(20e3, 567e3, 6.5, loss=0.97)
    assert ramping.update(20e3, 567e3, 7.6, loss=0.97)
    assert round(ramping.capacity) == 405e3 and ramping.hold == 4.0
    light = quality.ChannelObserver()
    assert not any(light.update(80e3, 1500e3, t, loss=0.05) for t in (1.0, 2.0, 3.0, 4.0))


def test_pauses_and_resumes_restart_at_a_keyframe_and_say_so():
    """A subscriber's disable and the allocator's pause are separate reasons; forwarding
    restarts only when neither is left, at a keyframe, continuing the sequence numbers; each
    (re)start calls on_resume (the StreamStateUpdate ACTIVE LiveKit sends when resuming)."""
    sent: list[bytes] = []
    plis: list[int] = []
    resumed: list[int] = []
    receiver = TrackReceiver("TR_V", "vp8", 90000, True, plis.append)
    receiver.add_layer(100, 0)
    down = DownTrack(receiver, "PA_x", 9, 96, sent.append, lambda b: None)
    down.on_resume = lambda: resumed.append(len(sent))
    receiver.subscribe(down)
    feed(receiver, 0, 1, 3000, vp8_payload(1, True))
    feed(receiver, 0, 2, 6000, vp8_payload(2, False))
    assert len(sent) == 2 and resumed == [0]  # called at the keyframe, before it goes out
    down.pause(bandwidth=True)
    down.pause()
    feed(receiver, 0, 3, 9000, vp8_payload(3, True))
    down.resume(bandwidth=True)  # the subscriber still has it disabled
    feed(receiver, 0, 4, 12000, vp8_payload(4, True))
    assert len(sent) == 2 and down.paused
    down.resume()
    feed(receiver, 0, 5, 15000, vp8_payload(5, False))  # waits for a keyframe
    feed(receiver, 0, 6, 18000, vp8_payload(6, True))
    assert len(sent) == 3 and resumed == [0, 2]
    seqs = [rtp.parse_rtp(b).seq for b in sent]
    assert seqs[2] == (seqs[1] + 1) & 0xFFFF


def test_nack_is_answered_with_rtx_at_most_three_times():
    sent: list[bytes] = []
    receiver = TrackReceiver("TR_V", "vp8", 90000, True, lambda s: None)
    receiver.add_layer(100, 0)
    down = DownTrack(receiver, "PA_x", 9, 96, sent.append, lambda b: None, rtx_ssrc=19, rtx_pt=97)
    receiver.subscribe(down)
    feed(receiver, 0, 1, 3000, vp8_payload(1, True))
    feed(receiver, 0, 2, 6000, vp8_payload(2, False))
    original = rtp.parse_rtp(sent[1])
    assert down.retransmit([original.seq, (original.seq + 50) & 0xFFFF], now=10.0) == 1
    rtx = rtp.parse_rtp(sent[2])
    assert (rtx.ssrc, rtx.pt, rtx.ts) == (19, 97, original.ts)
    assert struct.unpack_from("!H", sent[2], rtx.payload_offset)[0] == original.seq
    assert sent[2][rtx.payload_offset + 2:] == sent[1][original.payload_offset:]
    assert down.retransmit([original.seq], now=10.05) == 0  # too soon
    assert down.retransmit([original.seq], now=10.2) == 1
    assert down.retransmit([original.seq], now=10.4) == 1
    assert down.retransmit([original.seq], now=10.6) == 0  # three times at most


def test_allocator_and_dynacast_policy():
    tracks = [quality.AllocationTrack("cam", 2, [150e3, 500e3, 1700e3]),
              quality.AllocationTrack("screen", 2, [200e3, 800e3, 0], priority=1)]
    assert quality.allocate(5e6, tracks) == {"cam": 2, "screen": 1}
    assert quality.allocate(1.2e6, tracks) == {"cam": 0, "screen": 1}  # the screen share goes first
    assert quality.allocate(1.4e6, tracks) == {"cam": 1, "screen": 1}
    assert quality.allocate(100e3, tracks) == {"cam": 0, "screen": 0}  # never below layer 0
    # unless the subscriber allows pausing: what does not fit even at layer 0 is paused
    assert quality.allocate(250e3, tracks, allow_pause=True) == {"cam": quality.OFF, "screen": 0}
    assert quality.allocate(400e3, tracks, allow_pause=True) == {"cam": 0, "screen": 0}
    unmeasured = [quality.AllocationTrack("new", 2, [0.0, 0.0, 0.0])]
    assert quality.allocate(10e3, unmeasured, allow_pause=True) == {"new": 0}  # nothing to weigh yet
    assert quality.deficient(tracks, {"cam": 1, "screen": 1}) == 1200e3
    state = quality.DynacastState(published_at=0.0)
    assert state.update(quality.OFF, 5.0) is None  # nobody watching yet: wait 10 s
    assert state.update(quality.OFF, 10.5) == quality.OFF
    assert state.update(2, 11.0) == 2  # upgrades at once
    assert state.update(0, 12.0) is None and state.update(0, 16.0) is None
    assert state.update(0, 17.1) == 0  # downgrades after 5 s
    update = quality.subscribed_quality_update(pm.TrackInfo(sid="TR_x", layers=[
        pm.VideoLayer(quality=pm.VideoQuality.LOW), pm.VideoLayer(quality=pm.VideoQuality.MEDIUM),
        pm.VideoLayer(quality=pm.VideoQuality.HIGH)]), "video/VP8", 1)
    assert update.subscribed_codecs[0].codec == "vp8"
    assert [q.enabled for q in update.subscribed_codecs[0].qualities] == [True, True, False]


def test_uptrack_receiver_report_counts_losses():
    up = UpTrack("TR_A", 9, "opus", 48000, False, lambda: None)
    for seq in (1, 2, 5, 6):  # 3 and 4 lost
        buf = packet(seq=seq, ssrc=9)
        up.on_rtp(buf, rtp.parse_rtp(buf), seq * 0.02)
    block = up.report_block(1.0)
    assert block.cumulative_lost == 2 and block.highest_seq == 6 and block.fraction_lost == 256 * 2 // 6


# -- ICE-lite ---------------------------------------------------------------------------------------

def binding_request(username: str, pwd: str, use_candidate: bool = False) -> bytes:
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    msg.attributes["USERNAME"] = username
    msg.attributes["PRIORITY"] = 1
    msg.attributes["ICE-CONTROLLING"] = 1
    if use_candidate:
        msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(pwd.encode())
    return bytes(msg)


def test_ice_lite_answers_only_authenticated_checks():
    agent = IceLiteAgent()
    good = binding_request(f"{agent.local_ufrag}:client", agent.local_pwd, use_candidate=True)
    assert is_stun(good)
    msg = parse_binding_request(good)
    assert local_ufrag_of(msg) == agent.local_ufrag
    result = agent.handle_binding_request(msg, ("127.0.0.2", 5000))
    assert result.nominated
    response = stun.parse_message(result.response)
    assert response.message_class == stun.Class.RESPONSE
    assert response.attributes["XOR-MAPPED-ADDRESS"] == ("127.0.0.2", 5000)
    assert response.check_message_integrity(agent.local_pwd.encode())
    wrong_pwd = parse_binding_request(binding_request(f"{agent.local_ufrag}:client", "x" * 24))
    assert agent.handle_binding_request(wrong_pwd, ("127.0.0.2", 5000)) is None
    wrong_user = parse_binding_request(binding_request("other:client", agent.local_pwd))
    assert agent.handle_binding_request(wrong_user, ("127.0.0.2", 5000)) is None
    assert parse_binding_request(b"\x00\x01garbage") is None


# -- DTLS-SRTP ----------------------------------------------------------------------------------------

async def test_dtls_handshake_and_srtp_keys_with_an_openssl_client():
    server_cert, client_cert = RTCCertificate.generateCertificate(), RTCCertificate.generateCertificate()
    to_client: list[bytes] = []
    connected: list[bool] = []
    server = DtlsEndpoint(server_cert, to_client.append, lambda: connected.append(True), lambda r: None)
    server.start([(f.algorithm, f.value) for f in client_cert.getFingerprints()])
    client = SSL.Connection(client_cert._create_ssl_context(srtp_profiles=SRTP_PROFILES))
    client.set_connect_state()
    for _ in range(10):
        try:
            client.do_handshake()
        except SSL.WantReadError:
            pass
        while True:
            try:
                data = client.bio_read(65536)
            except SSL.WantReadError:
                break
            server.handle(data)
        for data in to_client:
            client.bio_write(data)
        to_client.clear()
        if connected:
            break
    assert connected and server.state == "connected"
    assert certificate_digest(client.get_peer_certificate(as_cryptography=True), "sha-256") == \
        server_cert.getFingerprints()[0].value
    # the client's keys (as DTLS client) decrypt what the server protects
    profile = next(p for p in SRTP_PROFILES if p.openssl_profile == client.get_selected_srtp_profile())
    material = client.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length))
    rx = Session(Policy(key=profile.get_key_and_salt(material, 1), ssrc_type=Policy.SSRC_ANY_INBOUND,
                        srtp_profile=profile.libsrtp_profile))
    plain = packet(seq=7, payload=os.urandom(50))
    assert rx.unprotect(server.tx_srtp.protect(plain)) == plain


async def test_dtls_rejects_a_wrong_fingerprint():
    server_cert, client_cert = RTCCertificate.generateCertificate(), RTCCertificate.generateCertificate()
    to_client: list[bytes] = []
    closed: list[str] = []
    server = DtlsEndpoint(server_cert, to_client.append, lambda: None, closed.append)
    server.start([("sha-256", "00:" * 31 + "00")])
    client = SSL.Connection(client_cert._create_ssl_context(srtp_profiles=SRTP_PROFILES))
    client.set_connect_state()
    for _ in range(10):
        try:
            client.do_handshake()
        except SSL.Error:
            pass
        try:
            while data := client.bio_read(65536):
                server.handle(data)
        except SSL.WantReadError:
            pass
        for data in to_client:
            client.bio_write(data)
        to_client.clear()
    assert server.state == "failed" and closed == ["fingerprint mismatch"]
    assert server.tx_srtp is None


def test_srtp_context_round_trip_and_errors():
    key = os.urandom(30)

    def ctx(kind: int) -> SrtpContext:
        p = Policy(key=key, ssrc_type=kind)
        return SrtpContext(Session(p))

    tx, rx = ctx(Policy.SSRC_ANY_OUTBOUND), ctx(Policy.SSRC_ANY_INBOUND)
    plain = packet(seq=3, payload=b"hello")
    protected = tx.protect(plain)
    assert protected != plain and rx.unprotect(protected) == plain
    tampered = protected[:-1] + bytes([protected[-1] ^ 1])
    tx2, rx2 = ctx(Policy.SSRC_ANY_OUTBOUND), ctx(Policy.SSRC_ANY_INBOUND)
    with pytest.raises(Exception):
        good = tx2.protect(packet(seq=9))
        rx2.unprotect(good[:-1] + bytes([good[-1] ^ 0x80]))
    with pytest.raises(Exception):
        rx.unprotect(tampered)
    with pytest.raises(Exception):
        tx.protect(b"\x80" * 2000)


def test_twcc_feedback_reports_arrivals_and_losses():
    from lkserver.rtc.twcc import TwccRecorder, parse_feedback

    rec = TwccRecorder()
    t0 = 10_000_000
    for seq, dt in ((65534, 0), (65535, 1000), (1, 3000), (2, 200000), (0, 2500)):  # wraps; 0 late but unreported
        rec.record(seq, t0 + dt, 77)
    fb = rec.build()
    packet = next(rtp.iter_rtcp(fb))
    assert (packet.pt, packet.count) == (rtp.RTCP_RTPFB, rtp.RTPFB_TWCC)
    count, rows = parse_feedback(fb)
    assert count == 0 and [s for s, _ in rows] == [65534, 65535, 0, 1, 2]
    times = dict(rows)
    assert times[65535] - times[65534] == 1000 and times[0] - times[65534] == 2500
    assert times[2] - times[1] == 197000  # a large delta
    rec.record(3, t0 + 300000)
    rec.record(5, t0 + 310000)
    rec.record(1, t0 + 320000)  # already reported: ignored
    count, rows = parse_feedback(rec.build())
    assert count == 1 and rows[0][0] == 3 and rows[1] == (4, None) and rows[2][0] == 5
    assert rec.build() is None


def test_red_primary_extraction():
    # two redundant blocks (4-byte headers with lengths 3 and 2) and a primary block (1-byte header)
    red = bytes([0x80 | 111, 0x00, 0x04, 0x03, 0x80 | 111, 0x00, 0x08, 0x02, 111]) + b"AAA" + b"BB" + b"primary"
    pt, offset = rtp.red_primary(red)
    assert pt == 111 and red[offset:] == b"primary"
    assert rtp.red_primary(bytes([0x80 | 111, 0x00])) is None  # truncated header
    sent: list[bytes] = []
    receiver = TrackReceiver("TR_A", "red", 48000, False, lambda s: None)
    receiver.add_layer(7, 0)
    down = DownTrack(receiver, "PA_x", 9, 111, sent.append, lambda b: None)
    down.red_primary = True
    receiver.subscribe(down)
    buf = packet(seq=5, ts=960, ssrc=7, pt=63, payload=red)
    receiver.layers[0].on_rtp(buf, rtp.parse_rtp(buf), 0.0)
    h = rtp.parse_rtp(sent[0])
    assert h.pt == 111 and sent[0][h.payload_offset:] == b"primary"


def test_connection_quality_scorer_and_loss_window():
    from lkserver.rtc.quality import LossWindow, QualityScorer, loss_weight

    window = LossWindow()
    assert window.take(100, 0) is None  # the first count is the baseline
    assert window.take(200, 10) == 0.1 and window.take(200, 10) is None  # nothing expected since
    assert loss_weight("video/VP8") == 10 and loss_weight("red") < loss_weight("opus") < 10
    scorer = QualityScorer()
    scorer.add(0.0, 5.0)
    assert scorer.window() == pm.ConnectionQuality.EXCELLENT
    seen = []
    for _ in range(6):  # 12 % video loss, window after window: falls (0.8 EMA) but never to LOST
        scorer.add(0.12, 5.0)
        seen.append(scorer.window())
    assert seen[0] == pm.ConnectionQuality.GOOD and seen[-1] == pm.ConnectionQuality.POOR
    assert scorer.score == 30.0
    scorer.add(0.0, 5.0, layer_distance=1)  # clean, but a layer below the wanted one
    assert scorer.window() == pm.ConnectionQuality.GOOD
    for _ in range(3):
        scorer.add(0.0, 5.0)
        last = scorer.window()
    assert last == pm.ConnectionQuality.EXCELLENT and 4.0 < scorer.mos <= 4.5


def test_publisher_rtx_is_answered_and_unwrapped():
    offer = sdp.parse((DATA / "rust_sdk_v1_publish_offer.sdp").read_text())
    assert [c.name for c in offer.media[8].codecs] == ["VP8"]  # the Rust SDK publishes without RTX ...
    cam = offer.media[3]  # ... but its video sections offer it (as browsers' publishing sections do)
    codec = negotiation.choose_publish_codec(cam)
    repair = negotiation.publish_rtx(cam, codec)
    assert repair is not None and repair.fmtp_params()["apt"] == str(codec.pt)
    names = [c.name.lower() for c in negotiation.answer_publish_section(cam, codec, rtx=True).codecs]
    assert names == [codec.name.lower(), "rtx"]
    assert [c.name.lower() for c in negotiation.answer_publish_section(cam, codec).codecs] == [codec.name.lower()]
    # an RFC 4588 packet: RTX PT and SSRC, the original sequence number first in the payload
    wrapped = packet(seq=7, ts=9000, ssrc=555, pt=97, marker=1, payload=struct.pack("!H", 4242) + b"frame")
    original = rtp.unwrap_rtx(wrapped, rtp.parse_rtp(wrapped), 96, 100)
    h = rtp.parse_rtp(original)
    assert (h.pt, h.seq, h.ts, h.ssrc, h.marker) == (96, 4242, 9000, 100, 1)
    assert original[h.payload_offset:] == b"frame"
    probe = packet(seq=8, ts=9000, ssrc=555, pt=97, payload=b"", padding=200)
    assert rtp.unwrap_rtx(probe, rtp.parse_rtp(probe), 96, 100) is None  # padding only


def test_nack_builder_round_trips():
    seqs = [65530, 65531, 65535, 0, 3, 40]
    [p] = list(rtp.iter_rtcp(rtp.build_nack(1, 2, seqs)))
    assert rtp.feedback_ssrcs(p) == (1, 2)
    assert rtp.parse_nack(p) == seqs


def test_publisher_losses_are_nacked_and_repairs_forwarded_once():
    sent: list[bytes] = []
    receiver = TrackReceiver("TR_V", "vp8", 90000, True, lambda s: None)
    up = receiver.add_layer(100, 0)
    up.nack_enabled = True
    down = DownTrack(receiver, "PA_x", 9, 96, sent.append, lambda b: None)
    receiver.subscribe(down)

    def at(seq: int, t: float, repair: bool = False) -> None:
        buf = packet(seq=seq, ts=seq * 3000, ssrc=100, pt=96, payload=vp8_payload(seq, seq == 10))
        (up.on_repair if repair else up.on_rtp)(buf, rtp.parse_rtp(buf), t)

    at(10, 0.0)
    at(11, 0.01)
    at(14, 0.02)  # 12 and 13 lost
    assert up.nacks_due(0.05) == [12, 13]
    assert up.nacks_due(0.1) == []  # asked 50 ms ago
    at(12, 0.12, repair=True)
    assert up.nacks_due(0.16) == [13]
    assert up.nacks_due(0.27) == [13] and up.nacks_due(0.4) == [] and 13 not in up.missing  # three tries
    at(12, 0.5, repair=True)  # a duplicate repair is not forwarded again
    out = [rtp.parse_rtp(b).seq - rtp.parse_rtp(sent[0]).seq for b in sent]
    assert out == [0, 1, 4, 2] and up.repaired == 1
    expected, lost = up.loss_counts()
    assert (expected, lost) == (5, 1)
    at(300, 0.6)  # a gap too wide to repair packet by packet is left to a keyframe
    assert up.nacks_due(0.7) == []


def test_late_packet_from_before_a_layer_switch_is_dropped():
    sent: list[bytes] = []
    receiver = TrackReceiver("TR_V", "vp8", 90000, True, lambda s: None)
    for layer, ssrc in ((0, 100), (2, 102)):
        receiver.add_layer(ssrc, layer)
    down = DownTrack(receiver, "PA_x", 9, 96, sent.append, lambda b: None)
    down.max_layer = 0
    receiver.subscribe(down)
    feed(receiver, 0, 1000, 50000, vp8_payload(700, True))
    down.max_layer = 2
    down.select()
    feed(receiver, 2, 9002, 906000, vp8_payload(30002, True))  # switch
    feed(receiver, 2, 9001, 903000, vp8_payload(30001, False))  # late, from before the switch
    feed(receiver, 2, 9003, 909000, vp8_payload(30003, False))
    seqs = [rtp.parse_rtp(b).seq for b in sent]
    assert len(sent) == 3 and seqs[1] == (seqs[0] + 1) & 0xFFFF and seqs[2] == (seqs[0] + 2) & 0xFFFF


def _client_step(client: SSL.Connection) -> list[bytes]:
    try:
        client.do_handshake()
    except SSL.WantReadError:
        pass
    out = []
    while True:
        try:
            out.append(client.bio_read(65536))
        except SSL.WantReadError:
            return out


async def test_dtls_resends_a_lost_flight_when_the_client_repeats_its_own():
    server_cert, client_cert = RTCCertificate.generateCertificate(), RTCCertificate.generateCertificate()
    to_client: list[bytes] = []
    server = DtlsEndpoint(server_cert, to_client.append, lambda: None, lambda r: None)
    server.start([(f.algorithm, f.value) for f in client_cert.getFingerprints()])
    client = SSL.Connection(client_cert._create_ssl_context(srtp_profiles=SRTP_PROFILES))
    client.set_connect_state()
    hello = _client_step(client)
    for d in hello:
        server.handle(d)
    first = list(to_client)
    assert first, "the server answers a ClientHello with its flight"
    to_client.clear()  # ... which the network loses
    for d in hello:  # the client's retransmission timer repeats the ClientHello
        server.handle(d)
    assert to_client == first  # at once, not on OpenSSL's 1 s timer
    for d in to_client:
        client.bio_write(d)
    to_client.clear()
    flight = _client_step(client)
    for d in flight:
        server.handle(d)
    assert server.state == "connected"
    final = list(to_client)
    assert final
    to_client.clear()  # the server's CCS/Finished is lost too; the client repeats its flight
    for d in flight:
        server.handle(d)
    assert to_client and all(d in final for d in to_client)
    for d in to_client:
        client.bio_write(d)
    _client_step(client)
    client.send(b"x")  # the client completed its handshake with the resent final flight
    # a peer that only repeats itself gets a bounded number of answers
    for _ in range(100):
        server.handle(flight[0])
    assert len(to_client) < 40
