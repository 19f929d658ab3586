"""The SIP cores without sockets: messages, digest auth, SDP, G.711 and DTMF, trunk and rule logic."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from livekit.protocol import sip as proto

from lkserver.sip import media, rules, sdp
from lkserver.sip.digest import DigestServer, authorization, parse_params
from lkserver.sip.message import (
    Address,
    Request,
    Response,
    SipParseError,
    SipURI,
    StreamFramer,
    parse,
    response_to,
)

INVITE = (b"INVITE sip:+15550100@10.0.0.1 SIP/2.0\r\n"
          b"v: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKabc;rport\r\n"
          b"Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKxyz\r\n"
          b'f: "Alice" <sip:+15550001@10.0.0.2>;tag=111\r\n'
          b"t: <sip:+15550100@10.0.0.1>\r\n"
          b"i: call-1@10.0.0.2\r\n"
          b"CSeq: 7 INVITE\r\n"
          b"Subject: folded\r\n  continued\r\n"
          b"c: application/sdp\r\n"
          b"l: 4\r\n\r\nbodyEXTRA")


def test_message_parse_compact_folded_and_body():
    req = parse(INVITE)
    assert isinstance(req, Request) and req.method == "INVITE" and req.uri == "sip:+15550100@10.0.0.1"
    assert req.call_id == "call-1@10.0.0.2" and req.cseq == (7, "INVITE") and req.branch == "z9hG4bKabc"
    assert len(req.get_all("Via")) == 2 and req.get("Subject") == "folded continued"
    assert req.body == b"body"  # Content-Length wins over what follows
    again = parse(bytes(req))
    assert again.headers == req.headers and again.body == b"body"
    resp = response_to(req, 180, to_tag="abc")
    assert isinstance(resp, Response) and resp.get("To").endswith(";tag=abc") and len(resp.get_all("Via")) == 2
    assert bytes(resp).startswith(b"SIP/2.0 180 Ringing\r\n")
    frm = Address.parse(req.get("From"))
    assert (frm.display, frm.uri, frm.tag) == ("Alice", "sip:+15550001@10.0.0.2", "111")
    u = SipURI.parse("sip:bob:pw@[::1]:5070;transport=tcp")
    assert (u.user, u.password, u.host, u.port, u.params) == ("bob", "pw", "::1", 5070, {"transport": "tcp"})


@pytest.mark.parametrize("bad", [b"", b"HELLO\r\n\r\n", b"INVITE sip:x SIP/2.0\r\nVia: a\r\n\r\n",
                                 b"SIP/2.0 abc OK\r\n\r\n", b"INVITE sip:x SIP/2.0\r\nno colon\r\n\r\n"])
def test_message_parse_refuses_garbage(bad):
    with pytest.raises(SipParseError):
        parse(bad)


def test_stream_framer_cuts_by_content_length():
    f = StreamFramer()
    two = b"\r\n" + INVITE[:-5] + INVITE[:-5]
    out = list(f.feed(two[:50])) + list(f.feed(two[50:]))
    assert [parse(m).call_id for m in out] == ["call-1@10.0.0.2"] * 2 and not f.buf


def test_digest_challenge_and_answer():
    server = DigestServer("lkserver")
    challenge = server.challenge("pbx")
    assert parse_params(challenge)["realm"] == "pbx"
    good = authorization(challenge, "INVITE", "sip:+1@h", "u", "secret")
    assert good is not None and server.verify(good, "INVITE", "u", "secret", "pbx")
    assert not server.verify(good, "INVITE", "u", "other", "pbx")
    assert not server.verify(good, "INVITE", "someone", "secret", "pbx")
    forged = good.replace(parse_params(good)["nonce"], "0.abc")
    assert not server.verify(forged, "INVITE", "u", "secret", "pbx")


def test_sdp_offer_answer():
    offer = (b"v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
             b"m=audio 4000 RTP/AVP 96 8 0 101\r\na=rtpmap:96 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
             b"m=video 4002 RTP/AVP 97\r\n")
    m = sdp.parse(offer)
    assert (m.ip, m.port, m.codec.name, m.codec.pt, m.dtmf_pt) == ("10.0.0.2", 4000, "PCMA", 8, 101)
    answer = sdp.parse(sdp.build("10.0.0.1", 5000, [m.codec], m.dtmf_pt))
    assert (answer.ip, answer.port, answer.codec, answer.dtmf_pt) == ("10.0.0.1", 5000, sdp.PCMA, 101)
    opus = sdp.parse(sdp.build("1.2.3.4", 6000, [sdp.OPUS, sdp.PCMU]))
    assert opus.codec.name == "opus" and opus.codec.rate == 48000
    with pytest.raises(sdp.SdpError):
        sdp.parse(b"v=0\r\nm=video 1 RTP/AVP 96\r\n")


@pytest.mark.parametrize("alaw", [False, True])
def test_g711_round_trip_and_reference_values(alaw):
    assert media.g711_encode(np.array([0], dtype=np.int16), alaw) == (b"\xd5" if alaw else b"\xff")
    tone = (np.sin(2 * np.pi * 440 * np.arange(8000) / 8000) * 12000).astype(np.int16)
    back = media.g711_decode(media.g711_encode(tone, alaw), alaw).astype(np.float64)
    snr = 10 * np.log10(np.sum(tone.astype(np.float64) ** 2) / np.sum((tone - back) ** 2))
    assert snr > 30  # G.711 gives about 38 dB on a loud tone
    up = media.upsample6(tone)
    down = media.downsample6(up).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(down * np.hanning(len(down))))
    assert len(up) == 48000 and len(down) == 8000 and abs(np.fft.rfftfreq(8000, 1 / 8000)[np.argmax(spectrum)] - 440) < 2


def test_dtmf_packets_give_one_digit_each():
    sender = media.RtpSender(0, 8000)
    digits: list[str] = []
    rx = media.DtmfReceiver(digits.append)
    for d in "1#":
        for pkt in media.dtmf_packets(sender, d, 101):
            pt, _m, _s, ts, _ssrc, payload = media.parse_rtp(pkt)
            assert pt == 101
            rx.feed(ts, payload)
    assert digits == ["1", "#"]


def rule(kind: str, pin: str = "", **kw) -> proto.SIPDispatchRuleInfo:
    inner = {"direct": proto.SIPDispatchRule(dispatch_rule_direct=proto.SIPDispatchRuleDirect(room_name="room", pin=pin)),
             "individual": proto.SIPDispatchRule(dispatch_rule_individual=proto.SIPDispatchRuleIndividual(
                 room_prefix="call", pin=pin)),
             "callee": proto.SIPDispatchRule(dispatch_rule_callee=proto.SIPDispatchRuleCallee(room_prefix="to", pin=pin))}
    return proto.SIPDispatchRuleInfo(rule=inner[kind], **kw)


def test_rule_priority_order():
    ranked = sorted([rule("callee"), rule("direct"), rule("individual", pin="1"), rule("direct", numbers=["+1"]),
                     rule("direct", pin="1", inbound_numbers=["+2"], numbers=["+1"])], key=rules.rule_priority)
    assert [rules.rule_priority(r) for r in ranked] == [0, 1100, 2001, 2100, 2102]


def test_match_and_evaluate_rules():
    trunk = proto.SIPInboundTrunkInfo(sip_trunk_id="ST_t", numbers=["+15550100"], headers={"X-Hi": "1"})
    call = rules.CallInfo(from_user="+15550001", to_user="+15550100", from_host="pbx.example", call_id="SCL_x")
    with pytest.raises(rules.SipRuleError, match="No SIP Dispatch Rules defined"):
        rules.match_rule(trunk, [], call)
    other = rule("direct", trunk_ids=["ST_other"], sip_dispatch_rule_id="SDR_o")
    # rules exist but none applies: LiveKit still words it "defined" (its counts are of applicable rules)
    with pytest.raises(rules.SipRuleError, match="No SIP Dispatch Rules defined"):
        rules.match_rule(trunk, [other, rule("direct", pin="9", numbers=["+1999"])], call)
    ind = rule("individual", sip_dispatch_rule_id="SDR_i", trunk_ids=["ST_t"], attributes={"a": "b"})
    wildcard = rule("direct", sip_dispatch_rule_id="SDR_w")
    best = rules.match_rule(trunk, [wildcard, ind, other], call)
    assert best.sip_dispatch_rule_id == "SDR_i"  # a rule for the trunk beats a wildcard
    d = rules.evaluate_rule(trunk, best, call)
    assert d.room_name.startswith("call_+15550001_") and len(d.room_name) == len("call_+15550001_") + 12
    assert (d.identity, d.name, d.headers) == ("sip_+15550001", "Phone +15550001", {"X-Hi": "1"})
    assert d.attributes == {"a": "b", "sip.callID": "SCL_x", "sip.trunkID": "ST_t", "sip.phoneNumber": "+15550001",
                            "sip.hostname": "pbx.example", "sip.trunkPhoneNumber": "+15550100", "sip.ruleID": "SDR_i"}
    hidden = rules.evaluate_rule(trunk, rule("callee", hide_phone_number=True), call)
    assert hidden.identity == "sip_" + hashlib.sha256(b"+15550001").hexdigest()[:16]
    assert hidden.name == "Phone 0001" and hidden.room_name == "to_+15550100"
    assert "sip.phoneNumber" not in hidden.attributes

    # PIN rules: without a PIN the bridge must ask; with it, only the rule of that PIN matches
    pinned = rule("direct", pin="1234", sip_dispatch_rule_id="SDR_p")
    assert rules.evaluate_rule(trunk, rules.match_rule(trunk, [pinned], call), call).request_pin
    call.pin = "1234"
    assert rules.match_rule(trunk, [pinned, wildcard], call).sip_dispatch_rule_id == "SDR_p"
    call.pin = "0000"
    with pytest.raises(rules.SipRuleError):
        rules.match_rule(trunk, [pinned], call)


def test_match_trunk():
    call = rules.CallInfo(from_user="+15550001", to_user="15550100", source_ip="10.1.2.3")
    specific = proto.SIPInboundTrunkInfo(sip_trunk_id="ST_s", numbers=["+1 555 0100"], allowed_addresses=["10.0.0.0/8"])
    default = proto.SIPInboundTrunkInfo(sip_trunk_id="ST_d", auth_username="u", auth_password="p")
    elsewhere = proto.SIPInboundTrunkInfo(sip_trunk_id="ST_e", numbers=["+15550100"], allowed_addresses=["192.168.0.1"])
    assert rules.match_trunk([default, specific, elsewhere], call).sip_trunk_id == "ST_s"
    assert rules.match_trunk([default, elsewhere], call).sip_trunk_id == "ST_d"
    assert rules.match_trunk([elsewhere], call) is None
    with pytest.raises(rules.SipRuleError, match='Multiple SIP Trunks matched for "15550100"'):
        rules.match_trunk([specific, proto.SIPInboundTrunkInfo(sip_trunk_id="ST_2", numbers=["+15550100"])], call)
    with pytest.raises(rules.SipRuleError, match="Multiple default SIP Trunks matched"):
        rules.match_trunk([default, proto.SIPInboundTrunkInfo(sip_trunk_id="ST_3", auth_username="x")], call)
