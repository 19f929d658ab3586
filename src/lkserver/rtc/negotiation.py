"""What lkserver answers and offers (sans-I/O): codecs, extensions and directions per section.

Publisher sections (the client sends): we take the client's first supported codec (opus; VP8 or
H.264), the mid and audio-level extensions, and answer `recvonly`. Subscriber sections carry one
forwarded track each (`sendonly`, msid `PA_xxx|TR_xxx TR_xxx`, our SSRC), as livekit-server
writes them (pkg/rtc/utils.go PackStreamID). Every description is ICE-lite with our host
candidates, DTLS role passive/actpass, BUNDLE and rtcp-mux.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from .sdp import Candidate, Codec, Media, SessionDescription, simulcast_send_rids

EXT_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
EXT_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
EXT_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
EXT_RRID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
EXT_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
EXT_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

SUPPORTED_VIDEO = ("VP8", "H264")
PUBLISH_AUDIO_FB = ["nack"]
PUBLISH_VIDEO_FB = ["nack", "nack pli", "ccm fir", "transport-cc"]
SUBSCRIBE_VIDEO_FB = ["nack", "nack pli", "ccm fir", "goog-remb"]

SCTP_PORT = 5000
MAX_MESSAGE_SIZE = 262144


@dataclass
class LocalParams:
    ice_ufrag: str
    ice_pwd: str
    fingerprint_lines: list[str]
    candidates: list[Candidate]


@dataclass
class TrackCodec:
    """The codec of a published track, as forwarded to subscribers."""

    mime: str  # "audio/opus", "video/VP8", "video/H264"
    clock_rate: int
    channels: int = 0
    fmtp: str = ""

    @property
    def name(self) -> str:
        return self.mime.split("/", 1)[1]

    @property
    def kind(self) -> str:
        return self.mime.split("/", 1)[0]


def choose_publish_codec(m: Media, allow_red: bool = False) -> Codec | None:
    """The client's first offered codec that we forward; with `allow_red`, audio RED (RFC 2198)
    over opus when offered, as LiveKit answers red first for tracks that do not disable it."""
    if m.kind == "audio" and allow_red:
        opus = next((c for c in m.codecs if c.name.upper() == "OPUS"), None)
        red = next((c for c in m.codecs if c.name.upper() == "RED"), None)
        if opus is not None and red is not None and red.fmtp.split("/")[0] == str(opus.pt):
            return red
    for c in m.codecs:
        name = c.name.upper()
        if m.kind == "audio" and name == "OPUS":
            return c
        if m.kind == "video" and name in SUPPORTED_VIDEO:
            if name == "H264" and c.fmtp_params().get("packetization-mode", "0") != "1":
                continue
            return c
    return None


def codec_for_subscriber(m: Media, codec: TrackCodec) -> Codec | None:
    """In a client's (recvonly) section, the codec matching a forwarded track."""
    best = None
    for c in m.codecs:
        if c.name.upper() != codec.name.upper() or c.clock_rate != codec.clock_rate:
            continue
        if codec.name.upper() == "H264":
            want, have = _h264_key(codec.fmtp), _h264_key(c.fmtp)
            if have == want:
                return c
            if best is None and have[1] == want[1]:
                best = c
            continue
        return c
    return best


def _h264_key(fmtp: str) -> tuple[str, str]:
    params = {}
    for part in fmtp.split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            params[k.strip()] = v.strip()
    # profile_idc and profile-iop decide decodability; the level may differ
    return params.get("profile-level-id", "42001f").lower()[:4], params.get("packetization-mode", "0")


@dataclass
class OutSection:
    """One section of a description we write."""

    mid: str
    kind: str  # audio | video | application
    direction: str = "inactive"
    codecs: list[Codec] = field(default_factory=list)
    extmaps: list[tuple[int, str]] = field(default_factory=list)
    ssrc: int = 0
    msid: str = ""  # "<stream> <track>"
    cname: str = ""
    rejected: bool = False
    rids: list[str] = field(default_factory=list)  # simulcast layers we receive (a=rid:X recv)
    rtx_ssrc: int = 0  # our retransmission stream (a=ssrc-group:FID)


def session_header(local: LocalParams, mids: list[str]) -> list[str]:
    return [
        "v=0",
        f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=ice-lite",
        "a=group:BUNDLE " + " ".join(mids),
        "a=msid-semantic:WMS *",
    ]


def write_section(s: OutSection, local: LocalParams, setup: str, port: int = 9) -> list[str]:
    if s.kind == "application":
        lines = [f"m=application {0 if s.rejected else port} UDP/DTLS/SCTP webrtc-datachannel",
                 "c=IN IP4 0.0.0.0"]
    else:
        fmts = " ".join(str(c.pt) for c in s.codecs) or "0"
        lines = [f"m={s.kind} {0 if s.rejected else port} UDP/TLS/RTP/SAVPF {fmts}", "c=IN IP4 0.0.0.0"]
    if s.rejected:
        lines.append(f"a=mid:{s.mid}")
        return lines
    lines += [f"a=ice-ufrag:{local.ice_ufrag}", f"a=ice-pwd:{local.ice_pwd}"]
    lines += local.fingerprint_lines
    lines += [f"a=setup:{setup}", f"a=mid:{s.mid}"]
    if s.kind == "application":
        lines += [f"a=sctp-port:{SCTP_PORT}", f"a=max-message-size:{MAX_MESSAGE_SIZE}"]
    else:
        for ext_id, uri in s.extmaps:
            lines.append(f"a=extmap:{ext_id} {uri}")
        lines.append(f"a={s.direction}")
        if s.msid and s.direction in ("sendonly", "sendrecv"):
            lines.append(f"a=msid:{s.msid}")
        lines += ["a=rtcp-mux", "a=rtcp-rsize"]
        for c in s.codecs:
            enc = f"{c.name}/{c.clock_rate}" + (f"/{c.channels}" if c.channels else "")
            lines.append(f"a=rtpmap:{c.pt} {enc}")
            for fb in c.rtcp_fb:
                lines.append(f"a=rtcp-fb:{c.pt} {fb}")
            if c.fmtp:
                lines.append(f"a=fmtp:{c.pt} {c.fmtp}")
        if s.rids:
            lines += [f"a=rid:{rid} recv" for rid in s.rids]
            lines.append("a=simulcast:recv " + ";".join(s.rids))
        if s.ssrc and s.direction in ("sendonly", "sendrecv"):
            if s.rtx_ssrc:
                lines.append(f"a=ssrc-group:FID {s.ssrc} {s.rtx_ssrc}")
            for ssrc in (s.ssrc, s.rtx_ssrc) if s.rtx_ssrc else (s.ssrc,):
                lines.append(f"a=ssrc:{ssrc} cname:{s.cname or 'lkserver'}")
                if s.msid:
                    lines.append(f"a=ssrc:{ssrc} msid:{s.msid}")
    for cand in local.candidates:
        lines.append(f"a=candidate:{cand.to_sdp()}")
    lines.append("a=end-of-candidates")
    return lines


def write_description(sections: list[OutSection], local: LocalParams, setup: str) -> str:
    mids = [s.mid for s in sections if not s.rejected]
    lines = session_header(local, mids)
    for s in sections:
        lines += write_section(s, local, setup)
    return "\r\n".join(lines) + "\r\n"


def accepted_extmaps(m: Media) -> list[tuple[int, str]]:
    """The client's header extensions we accept, echoed in every audio/video section we answer.

    libwebrtc negotiates extensions per BUNDLE transport: one left out of an early answer (say,
    for a recvonly section) disappears from every later offer of that connection. The rid
    extensions are accepted for video although simulcast is not answered yet (the client then
    sends its first layer): Chromium refuses its own later offers (an ICE restart on resume, a
    second track) for a section with `a=simulcast` whose rid extension was dropped."""
    wanted = (EXT_MID, EXT_AUDIO_LEVEL) if m.kind == "audio" else (EXT_MID, EXT_RID, EXT_RRID, EXT_ABS_SEND_TIME,
                                                                  EXT_TWCC)
    return [(e.id, e.uri) for e in m.extmaps if e.uri in wanted]


def publish_rtx(m: Media, codec: Codec) -> Codec | None:
    """The RTX format (RFC 4588) the client offers for a video codec, if any."""
    if m.kind != "video":
        return None
    return next((c for c in m.codecs if c.name.lower() == "rtx" and c.fmtp_params().get("apt") == str(codec.pt)),
                None)


def answer_publish_section(m: Media, codec: Codec, rtx: bool = False) -> OutSection:
    """Our answer to a section the client sends media on; with `rtx`, the codec's RTX format too
    (retransmissions we ask for with NACKs then come on their own stream)."""
    fb = PUBLISH_AUDIO_FB if m.kind == "audio" else PUBLISH_VIDEO_FB
    codecs = [Codec(codec.pt, codec.name, codec.clock_rate, codec.channels, codec.fmtp,
                    [f for f in fb if f in codec.rtcp_fb])]
    repair = publish_rtx(m, codec) if rtx else None
    if repair is not None:
        codecs.append(Codec(repair.pt, repair.name, repair.clock_rate, 0, repair.fmtp))
    if codec.name.upper() == "RED":  # the primary codec goes along (red carries opus)
        opus = next(c for c in m.codecs if c.name.upper() == "OPUS")
        codecs.append(Codec(opus.pt, opus.name, opus.clock_rate, opus.channels, opus.fmtp,
                            [f for f in fb if f in opus.rtcp_fb]))
    direction = "recvonly" if m.direction in ("sendonly", "sendrecv") else "inactive"
    section = OutSection(m.mid, m.kind, direction, codecs, accepted_extmaps(m))
    if m.kind == "video" and m.extmap_id(EXT_RID):
        section.rids = simulcast_send_rids(m)
    return section


def rid_layers(rids: list[str]) -> dict[str, int]:
    """Simulcast rid -> spatial layer: q/h/f by name (LiveKit's alphabet), else by position from
    the lowest (livekit pkg/sfu/buffer/videolayerutils.go RidToSpatialLayer)."""
    if all(r in ("q", "h", "f") for r in rids):
        return {r: {"q": 0, "h": 1, "f": 2}[r] for r in rids}
    return {r: i for i, r in enumerate(sorted(rids))}


def answer_application_section(m: Media) -> OutSection:
    return OutSection(m.mid, "application", "sendrecv")


def rejected_section(m: Media) -> OutSection:
    return OutSection(m.mid, m.kind, rejected=True)


def subscriber_codec(codec: TrackCodec, pt: int) -> Codec:
    fb = [] if codec.kind == "audio" else list(SUBSCRIBE_VIDEO_FB)
    return Codec(pt, codec.name, codec.clock_rate, codec.channels, codec.fmtp, fb)


def pack_stream_id(participant_sid: str, track_sid: str) -> str:
    return f"{participant_sid}|{track_sid}"


def offered_remote(sd: SessionDescription) -> list[Media]:
    return [m for m in sd.media if not m.rejected]
