"""SIP test helpers: a server with the SIP bridge on, Debian's sipp as the far end, tone files
and an RTP sink that measures what the call hears."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rtc"))

from conftest import ServerProcess
from rtcfix import free_udp_port, py_client, require_netns, rtc_config, token
from test_rtc_python_sdk import assert_tone

__all__ = ["assert_tone", "py_client", "token"]  # for the SIP tests (tests/rtc is on the path from here)

from lkserver.sip import media


def free_sip_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        port = free_udp_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free SIP port")


def start_sip_server(data_dir: Path) -> tuple[ServerProcess, int]:
    require_netns()
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: install Debian's sip-tester (scripts/install-system-deps.sh)")
    port = free_sip_port()
    extra = f"""
sip:
  enabled: true
  port: {port}
  bind: 127.0.0.1
  node_ip: 127.0.0.1
  rtp_port_start: 0
"""
    s = ServerProcess(data_dir, config=rtc_config(free_udp_port(), extra)).start()
    return s, port


def write_ulaw_wav(path: Path, hz: float, seconds: float) -> None:
    """A G.711 µ-law WAV (format 7), as sipp's rtp_stream plays it (payload type 0)."""
    n = int(8000 * seconds)
    pcm = (np.sin(2 * np.pi * hz * np.arange(n) / 8000) * 12000).astype(np.int16)
    data = media.g711_encode(pcm, alaw=False)
    fmt = struct.pack("<HHIIHHH", 7, 1, 8000, 8000, 1, 8, 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    x = pcm.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[:5] = 0
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


class RtpSink(asyncio.DatagramProtocol):
    """Receives a call's RTP (PCMU) at the address the far end's SDP names."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls) -> RtpSink:
        sink = cls()
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: sink, local_addr=("127.0.0.1", 0))
        return sink

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[no-untyped-def]
        self.packets.append(data)

    def pcm(self, pt: int = 0) -> np.ndarray:
        frames = []
        for p in self.packets:
            parsed = media.parse_rtp(p)
            if parsed is not None and parsed[0] == pt:
                frames.append(media.g711_decode(parsed[5], alaw=pt == 8))
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


SDP = """v=0
o=sipp 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {media_port} RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv
"""

INVITE = """INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Caller" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:{caller}@[local_ip]:[local_port];transport=[transport]>
Max-Forwards: 70
{auth}Content-Type: application/sdp
Content-Length: [len]

"""

ACK = """ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Caller" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0

"""

BYE = """BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Caller" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 3 BYE
Max-Forwards: 70
Content-Length: 0

"""


def uac_scenario(caller: str, media_port: int, *, wav: str = "", talk_ms: int = 6000,
                 expect_refused: int = 0) -> str:
    """A calling sipp: INVITE, digest challenge, INVITE with credentials, then either the
    refusal `expect_refused` or 200/ACK, a tone from `wav`, and BYE."""
    sdp = SDP.format(media_port=media_port)
    steps = [
        f'<send retrans="500"><![CDATA[\n{INVITE.format(caller=caller, cseq=1, auth="")}{sdp}]]></send>',
        '<recv response="100" optional="true"/>',
        '<recv response="401" auth="true"/>',
        f'<send><![CDATA[\n{ACK.format(caller=caller, cseq=1)}]]></send>',
        f'<send retrans="500"><![CDATA[\n{INVITE.format(caller=caller, cseq=2, auth="[authentication]" + chr(10))}{sdp}]]></send>',
        '<recv response="100" optional="true"/>',
    ]
    if expect_refused:
        steps += [f'<recv response="{expect_refused}"/>',
                  f'<send><![CDATA[\n{ACK.format(caller=caller, cseq=2)}]]></send>']
    else:
        steps += ['<recv response="180" optional="true"/>', '<recv response="200" rtd="true"/>',
                  f'<send><![CDATA[\n{ACK.format(caller=caller, cseq=2)}]]></send>']
        if wav:
            steps.append(f'<nop><action><exec rtp_stream="{wav},1,0"/></action></nop>')
        steps += [f'<pause milliseconds="{talk_ms}"/>',
                  f'<send retrans="500"><![CDATA[\n{BYE.format(caller=caller)}]]></send>',
                  '<recv response="200"/>']
    return ('<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="lkserver-uac">\n'
            + "\n".join(steps) + "\n</scenario>\n")


UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="lkserver-uas">
<recv request="INVITE" crlf="true"/>
<send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
<pause milliseconds="{ring_ms}"/>
<send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}]]></send>
<recv request="ACK" rtd="true" crlf="true"/>
<recv request="BYE"/>
<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


def uas_scenario(media_port: int, ring_ms: int = 500) -> str:
    return UAS.format(ring_ms=ring_ms, sdp=SDP.format(media_port=media_port))


async def run_sipp(workdir: Path, scenario: str, *args: str, timeout: float = 40.0) -> tuple[int, str]:
    """Run sipp with a scenario; returns (exit code, its error log and stdout tail)."""
    workdir.mkdir(parents=True, exist_ok=True)
    sf = workdir / f"scenario{len(list(workdir.glob('scenario*.xml')))}.xml"
    sf.write_text(scenario)
    proc = await asyncio.create_subprocess_exec(
        "sipp", *args, "-sf", str(sf), "-m", "1", "-l", "1", "-nostdin", "-trace_err", "-trace_msg",
        "-timeout", f"{int(timeout)}s", "-timeout_error",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
        cwd=str(workdir))
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout + 10)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    logs = "".join(p.read_text(errors="replace")[-3000:] for p in workdir.glob("*_errors.log"))
    msgs = "".join(p.read_text(errors="replace")[-4000:] for p in workdir.glob("*_messages.log"))
    return proc.returncode or 0, logs + "\n--- messages ---\n" + msgs + "\n--- out ---\n" + out.decode(errors="replace")[-1500:]


UAS_TRANSFER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="lkserver-uas-transfer">
<recv request="INVITE" crlf="true">
  <action><ereg regexp=".*" search_in="hdr" header="From:" assign_to="caller"/></action>
</recv>
<send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}]]></send>
<recv request="ACK" crlf="true"/>
<recv request="REFER">
  <action><ereg regexp=".*" search_in="hdr" header="Refer-To:" assign_to="referto"/></action>
</recv>
<send><![CDATA[
SIP/2.0 202 Accepted
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
<send retrans="500"><![CDATA[
NOTIFY [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [$caller]
Call-ID: [call_id]
CSeq: 1 NOTIFY
Max-Forwards: 70
Event: refer
Subscription-State: terminated;reason=noresource
Contact: <sip:[local_ip]:[local_port]>
Content-Type: message/sipfrag
Content-Length: [len]

SIP/2.0 200 OK
]]></send>
<recv response="200"/>
<recv request="BYE"/>
<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
<nop><action><log message="REFER-TO [$referto]"/></action></nop>
</scenario>
"""


def uas_transfer_scenario(media_port: int) -> str:
    return UAS_TRANSFER.replace("{sdp}", SDP.format(media_port=media_port))


def uac_pin_scenario(caller: str, media_port: int, digits: str, after_ms: int = 4000) -> str:
    """A calling sipp without credentials that keys `digits` (RFC 4733, sipp's own DTMF captures)."""
    sdp = SDP.format(media_port=media_port)
    names = {"#": "pound", "*": "star"}
    steps = [
        f'<send retrans="500"><![CDATA[\n{INVITE.format(caller=caller, cseq=1, auth="")}{sdp}]]></send>',
        '<recv response="100" optional="true"/>',
        '<recv response="180" optional="true"/>',
        '<recv response="200" rtd="true"/>',
        f'<send><![CDATA[\n{ACK.format(caller=caller, cseq=1)}]]></send>',
        '<pause milliseconds="500"/>',
    ]
    for d in digits:
        steps.append(f'<nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_{names.get(d, d)}.pcap"/>'
                     '</action></nop>')
        steps.append('<pause milliseconds="400"/>')
    steps += [f'<pause milliseconds="{after_ms}"/>',
              f'<send retrans="500"><![CDATA[\n{BYE.format(caller=caller)}]]></send>',
              '<recv response="200"/>']
    return ('<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="lkserver-uac-pin">\n'
            + "\n".join(steps) + "\n</scenario>\n")


UAS_BUSY = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="lkserver-uas-busy">
<recv request="INVITE" crlf="true"/>
<send><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
<recv request="ACK"/>
</scenario>
"""
