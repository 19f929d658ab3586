"""SDP offer/answer for one audio stream (RFC 4566, RFC 3264), the subset SIP trunks use.

Codecs we speak: PCMU (0) and PCMA (8) at 8 kHz, Opus (dynamic, 48 kHz), and RFC 4733
telephone-event for DTMF. An answer picks the first offered codec we support, in the offer's
order, and keeps telephone-event when offered.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Codec:
    name: str  # "PCMU", "PCMA", "opus"
    pt: int
    rate: int
    channels: int = 1


PCMU = Codec("PCMU", 0, 8000)
PCMA = Codec("PCMA", 8, 8000)
OPUS = Codec("opus", 111, 48000, 2)
SUPPORTED = {"pcmu": PCMU, "pcma": PCMA, "opus": OPUS}
DTMF_PT = 101


@dataclass
class MediaDescription:
    ip: str
    port: int
    codec: Codec | None
    dtmf_pt: int | None = None
    # every (pt, name, rate, channels) offered, in order
    offered: list[tuple[int, str, int, int]] = field(default_factory=list)
    direction: str = "sendrecv"


class SdpError(ValueError):
    pass


def parse(body: bytes) -> MediaDescription:
    """The first audio section: where to send RTP and the codecs offered there."""
    text = body.decode("utf-8", "replace")
    session_ip = ip = ""
    port = -1
    pts: list[int] = []
    rtpmap: dict[int, tuple[str, int, int]] = {}
    in_audio = False
    direction = "sendrecv"
    for line in text.replace("\r\n", "\n").split("\n"):
        line = line.strip()
        if line.startswith("m="):
            if in_audio:
                break  # only the first audio section
            parts = line[2:].split()
            if parts and parts[0] == "audio" and len(parts) >= 4:
                in_audio = True
                port = int(parts[1])
                pts = [int(p) for p in parts[3:] if p.isdigit()]
        elif line.startswith("c="):
            addr = line[2:].split()
            if len(addr) >= 3:
                if in_audio:
                    ip = addr[2].split("/")[0]
                else:
                    session_ip = addr[2].split("/")[0]
        elif in_audio and line.startswith("a=rtpmap:"):
            num, _, spec = line[9:].partition(" ")
            enc = spec.split("/")
            if num.isdigit() and len(enc) >= 2 and enc[1].isdigit():
                rtpmap[int(num)] = (enc[0], int(enc[1]), int(enc[2]) if len(enc) > 2 and enc[2].isdigit() else 1)
        elif in_audio and line[2:] in ("sendrecv", "sendonly", "recvonly", "inactive") and line.startswith("a="):
            direction = line[2:]
    if port < 0:
        raise SdpError("no audio section")
    offered = []
    for pt in pts:
        if pt in rtpmap:
            name, rate, ch = rtpmap[pt]
        elif pt == 0:
            name, rate, ch = "PCMU", 8000, 1
        elif pt == 8:
            name, rate, ch = "PCMA", 8000, 1
        else:
            continue
        offered.append((pt, name, rate, ch))
    codec = None
    dtmf = None
    for pt, name, rate, ch in offered:
        if name.lower() == "telephone-event" and rate == 8000 and dtmf is None:
            dtmf = pt
        elif codec is None and name.lower() in SUPPORTED:
            c = SUPPORTED[name.lower()]
            if rate == c.rate:
                codec = Codec(c.name, pt, c.rate, ch)
    return MediaDescription(ip or session_ip, port, codec, dtmf, offered, direction)


def build(ip: str, port: int, codecs: list[Codec], dtmf_pt: int | None = DTMF_PT,
          session_id: int | None = None) -> bytes:
    """An SDP offer (several codecs) or answer (one codec) for one sendrecv audio stream."""
    sid = session_id or int(time.time()) * 1000 + secrets.randbelow(1000)
    pts = [c.pt for c in codecs] + ([dtmf_pt] if dtmf_pt is not None else [])
    lines = ["v=0", f"o=lkserver {sid} {sid} IN IP4 {ip}", "s=lkserver", f"c=IN IP4 {ip}", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(str(p) for p in pts)}"]
    for c in codecs:
        lines.append(f"a=rtpmap:{c.pt} {c.name}/{c.rate}" + (f"/{c.channels}" if c.channels > 1 else ""))
        if c.name == "opus":
            lines.append(f"a=fmtp:{c.pt} minptime=10;useinbandfec=1")
    if dtmf_pt is not None:
        lines += [f"a=rtpmap:{dtmf_pt} telephone-event/8000", f"a=fmtp:{dtmf_pt} 0-16"]
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()
