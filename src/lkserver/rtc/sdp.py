"""SDP for WebRTC (sans-I/O): parse offers/answers and write ours (RFC 8866, RFC 8829 JSEP).

Only what a LiveKit-style SFU needs: BUNDLE, ICE and DTLS attributes, codecs (rtpmap, fmtp,
rtcp-fb), header extensions (extmap), SSRCs and SSRC groups, msid, rid and simulcast
(RFC 8851/8853), and the SCTP application section. Unknown attributes are kept on parse and
ignored. Lines may end in CRLF or LF; we write CRLF.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class SdpError(ValueError):
    """The SDP cannot be used; the message says why."""


@dataclass
class Codec:
    pt: int
    name: str  # "opus", "VP8", "H264", "rtx", "red", ...
    clock_rate: int
    channels: int = 0
    fmtp: str = ""
    rtcp_fb: list[str] = field(default_factory=list)

    @property
    def mime(self) -> str:
        kind = "audio" if self.channels or self.name.lower() in ("opus", "pcmu", "pcma", "red", "g722") else "video"
        return f"{kind}/{self.name}"

    def fmtp_params(self) -> dict[str, str]:
        out = {}
        for part in self.fmtp.split(";"):
            if "=" in part:
                k, v = part.split("=", 1)
                out[k.strip()] = v.strip()
        return out


@dataclass
class Extmap:
    id: int
    uri: str
    direction: str = ""


@dataclass
class Rid:
    id: str
    direction: str  # "send" | "recv"
    params: str = ""


@dataclass
class Candidate:
    foundation: str
    component: int
    transport: str  # "udp" | "tcp"
    priority: int
    host: str
    port: int
    type: str  # "host", "srflx", ...
    tcptype: str = ""

    def to_sdp(self) -> str:
        s = f"{self.foundation} {self.component} {self.transport} {self.priority} {self.host} {self.port} typ {self.type}"
        if self.tcptype:
            s += f" tcptype {self.tcptype}"
        return s

    @classmethod
    def parse(cls, value: str) -> "Candidate":
        if value.startswith("candidate:"):
            value = value[len("candidate:"):]
        bits = value.split()
        if len(bits) < 8 or bits[6] != "typ":
            raise SdpError(f"bad candidate: {value!r}")
        tcptype = ""
        for i in range(8, len(bits) - 1, 2):
            if bits[i] == "tcptype":
                tcptype = bits[i + 1]
        return cls(bits[0], int(bits[1]), bits[2].lower(), int(bits[3]), bits[4], int(bits[5]), bits[7], tcptype)


@dataclass
class Media:
    kind: str  # audio | video | application
    port: int
    proto: str
    fmt: list[str]
    mid: str = ""
    direction: str = "sendrecv"
    codecs: list[Codec] = field(default_factory=list)
    extmaps: list[Extmap] = field(default_factory=list)
    ssrcs: dict[int, dict[str, str]] = field(default_factory=dict)
    ssrc_groups: list[tuple[str, list[int]]] = field(default_factory=list)
    msid: str = ""  # "<stream id> <track id>"
    rids: list[Rid] = field(default_factory=list)
    simulcast: str = ""  # raw value of a=simulcast
    ice_ufrag: str = ""
    ice_pwd: str = ""
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str = ""
    rtcp_mux: bool = False
    sctp_port: int = 0
    max_message_size: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    bundle_only: bool = False

    @property
    def rejected(self) -> bool:
        return self.port == 0 and not self.bundle_only

    def codec_by_pt(self, pt: int) -> Codec | None:
        for c in self.codecs:
            if c.pt == pt:
                return c
        return None

    def extmap_id(self, uri: str) -> int:
        for e in self.extmaps:
            if e.uri == uri:
                return e.id
        return 0

    @property
    def msid_track(self) -> str:
        """The track id of this section's msid (a=msid, or the a=ssrc msid attribute)."""
        value = self.msid
        if not value:
            for attrs in self.ssrcs.values():
                if "msid" in attrs:
                    value = attrs["msid"]
                    break
        parts = value.split()
        return parts[1] if len(parts) > 1 else ""

    @property
    def msid_stream(self) -> str:
        value = self.msid
        if not value:
            for attrs in self.ssrcs.values():
                if "msid" in attrs:
                    value = attrs["msid"]
                    break
        parts = value.split()
        return parts[0] if parts else ""

    def primary_ssrcs(self) -> list[int]:
        """Media SSRCs declared for this section (RTX and FEC SSRCs of FID/FEC-FR groups excluded)."""
        secondary = set()
        for semantics, ssrcs in self.ssrc_groups:
            if semantics in ("FID", "FEC-FR") and len(ssrcs) > 1:
                secondary.update(ssrcs[1:])
        return [s for s in self.ssrcs if s not in secondary]

    def rtx_pairs(self) -> dict[int, int]:
        """media SSRC -> RTX SSRC from a=ssrc-group:FID."""
        return {ssrcs[0]: ssrcs[1] for semantics, ssrcs in self.ssrc_groups
                if semantics == "FID" and len(ssrcs) == 2}


@dataclass
class SessionDescription:
    media: list[Media] = field(default_factory=list)
    bundle: list[str] = field(default_factory=list)
    ice_ufrag: str = ""
    ice_pwd: str = ""
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str = ""
    ice_lite: bool = False
    extmap_allow_mixed: bool = False
    msid_semantic: str = ""

    def ice_credentials(self, media: Media | None = None) -> tuple[str, str]:
        m = media or (self.media[0] if self.media else None)
        ufrag = (m.ice_ufrag if m else "") or self.ice_ufrag
        pwd = (m.ice_pwd if m else "") or self.ice_pwd
        return ufrag, pwd

    def dtls_fingerprints(self) -> list[tuple[str, str]]:
        for m in self.media:
            if m.fingerprints:
                return m.fingerprints
        return self.fingerprints

    def dtls_setup(self) -> str:
        for m in self.media:
            if m.setup:
                return m.setup
        return self.setup

    def by_mid(self, mid: str) -> Media | None:
        for m in self.media:
            if m.mid == mid:
                return m
        return None


MAX_SDP_SIZE = 256 * 1024
MAX_MEDIA_SECTIONS = 256


def parse(text: str) -> SessionDescription:
    """Parse an SDP; raises SdpError for anything a WebRTC endpoint could not have sent."""
    if not isinstance(text, str) or not text.strip():
        raise SdpError("empty SDP")
    if len(text) > MAX_SDP_SIZE:
        raise SdpError("SDP too large")
    lines = [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpError("SDP must start with v=")
    sd = SessionDescription()
    cur: Media | None = None
    try:
        for line in lines:
            if len(line) < 2 or line[1] != "=":
                raise SdpError(f"bad SDP line: {line[:60]!r}")
            t, value = line[0], line[2:]
            if t == "m":
                bits = value.split()
                if len(bits) < 3:
                    raise SdpError(f"bad m= line: {value[:60]!r}")
                if len(sd.media) >= MAX_MEDIA_SECTIONS:
                    raise SdpError("too many media sections")
                cur = Media(kind=bits[0], port=int(bits[1].split("/")[0]), proto=bits[2], fmt=bits[3:])
                if cur.kind in ("audio", "video"):
                    for f in cur.fmt:
                        if f.isdigit():
                            cur.codecs.append(Codec(pt=int(f), name="", clock_rate=0))
                sd.media.append(cur)
            elif t == "a":
                _parse_attribute(sd, cur, value)
    except (ValueError, IndexError) as e:
        if isinstance(e, SdpError):
            raise
        raise SdpError(f"malformed SDP: {e}") from None
    for m in sd.media:
        m.codecs = [c for c in m.codecs if c.name]  # drop formats without rtpmap
    return sd


def _parse_attribute(sd: SessionDescription, m: Media | None, value: str) -> None:
    name, _, arg = value.partition(":")
    if m is None:  # session level
        if name == "group" and arg.startswith("BUNDLE"):
            sd.bundle = arg.split()[1:]
        elif name == "ice-ufrag":
            sd.ice_ufrag = arg
        elif name == "ice-pwd":
            sd.ice_pwd = arg
        elif name == "fingerprint":
            alg, _, fp = arg.partition(" ")
            sd.fingerprints.append((alg.lower(), fp.strip().upper()))
        elif name == "setup":
            sd.setup = arg
        elif name == "ice-lite":
            sd.ice_lite = True
        elif name == "extmap-allow-mixed":
            sd.extmap_allow_mixed = True
        elif name == "msid-semantic":
            sd.msid_semantic = arg.strip()
        return
    if name == "mid":
        m.mid = arg
    elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
        m.direction = name
    elif name == "rtpmap":
        pt_s, _, enc = arg.partition(" ")
        parts = enc.split("/")
        c = m.codec_by_pt(int(pt_s))
        if c is not None:
            c.name = parts[0]
            c.clock_rate = int(parts[1]) if len(parts) > 1 else 0
            c.channels = int(parts[2]) if len(parts) > 2 else 0
    elif name == "fmtp":
        pt_s, _, params = arg.partition(" ")
        c = m.codec_by_pt(int(pt_s))
        if c is not None:
            c.fmtp = params.strip()
    elif name == "rtcp-fb":
        pt_s, _, fb = arg.partition(" ")
        if pt_s == "*":
            for c in m.codecs:
                c.rtcp_fb.append(fb.strip())
        else:
            c = m.codec_by_pt(int(pt_s))
            if c is not None:
                c.rtcp_fb.append(fb.strip())
    elif name == "extmap":
        id_s, _, rest = arg.partition(" ")
        ident, _, direction = id_s.partition("/")
        m.extmaps.append(Extmap(int(ident), rest.split()[0] if rest else "", direction))
    elif name == "ssrc":
        ssrc_s, _, attr = arg.partition(" ")
        k, _, v = attr.partition(":")
        m.ssrcs.setdefault(int(ssrc_s), {})[k] = v
    elif name == "ssrc-group":
        bits = arg.split()
        m.ssrc_groups.append((bits[0], [int(x) for x in bits[1:]]))
    elif name == "msid":
        m.msid = arg
    elif name == "rid":
        bits = arg.split(None, 2)
        m.rids.append(Rid(bits[0], bits[1] if len(bits) > 1 else "", bits[2] if len(bits) > 2 else ""))
    elif name == "simulcast":
        m.simulcast = arg
    elif name == "ice-ufrag":
        m.ice_ufrag = arg
    elif name == "ice-pwd":
        m.ice_pwd = arg
    elif name == "fingerprint":
        alg, _, fp = arg.partition(" ")
        m.fingerprints.append((alg.lower(), fp.strip().upper()))
    elif name == "setup":
        m.setup = arg
    elif name == "rtcp-mux":
        m.rtcp_mux = True
    elif name == "sctp-port":
        m.sctp_port = int(arg)
    elif name == "max-message-size":
        m.max_message_size = int(arg)
    elif name == "candidate":
        try:
            m.candidates.append(Candidate.parse(arg))
        except SdpError:
            pass  # a candidate we cannot use is not an error for an ICE-lite answerer
    elif name == "bundle-only":
        m.bundle_only = True


def simulcast_send_rids(m: Media) -> list[str]:
    """Rid ids the remote sends, in `a=simulcast:send` order (paused `~` marks dropped)."""
    value = m.simulcast.strip()
    if not value.startswith("send"):
        # `a=simulcast:recv ...` or nothing: fall back to a=rid send lines
        return [r.id for r in m.rids if r.direction == "send"]
    out = []
    for alt in value.split(None, 1)[1].split(";") if " " in value else []:
        first = alt.split(",")[0].lstrip("~")
        if first:
            out.append(first)
    return out


def write(session_lines: list[str], media: list[list[str]]) -> str:
    """Join a session block and media blocks into SDP text (CRLF, trailing CRLF)."""
    lines = list(session_lines)
    for block in media:
        lines.extend(block)
    return "\r\n".join(lines) + "\r\n"
