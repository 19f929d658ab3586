"""One WebRTC transport (what a PeerConnection is on our side): ICE-lite, DTLS-SRTP, SCTP.

Inbound packets arrive synchronously from the network (`on_packet`) and are demultiplexed by
their first byte (RFC 7983): DTLS records go to the DTLS endpoint, SRTP/SRTCP are decrypted and
handed to `on_rtp` / `on_rtcp` in the same call, so forwarding never waits on a queue. Outbound
RTP and RTCP are protected and sent on the selected path. Data channels are aiortc's SCTP
association running over our DTLS endpoint.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Optional

import pylibsrtp
from aioice import stun
from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport

from ..logs import get_logger
from .dtls import DtlsEndpoint
from .ice import IceLiteAgent
from .net import MediaNetwork, Path, UdpMux
from .rtp import is_rtcp
from .sdp import Candidate, SessionDescription

log = get_logger("lkserver.rtc.transport")


def _noop(data: bytes) -> None:
    pass


class WebRtcTransport:
    def __init__(self, network: MediaNetwork, certificate: RTCCertificate, name: str) -> None:
        self.network = network
        self.certificate = certificate
        self.name = name
        self.ice = IceLiteAgent()
        self.dtls = DtlsEndpoint(certificate, self._send_raw, self._dtls_connected, self._dtls_closed)
        self.muxes: list[UdpMux] = []
        self.path: Optional[Path] = None
        self.nominated = False
        self.sctp: Optional[RTCSctpTransport] = None
        self.remote_sctp_port = 0
        self.remote_max_message_size = 65536
        self.on_rtp: Callable[[bytes], None] = _noop
        self.on_rtcp: Callable[[bytes], None] = _noop
        self.on_connected: Callable[[], None] = lambda: None
        self.on_closed: Callable[[str], None] = lambda reason: None
        self.on_datachannel: Callable[[RTCDataChannel], None] = lambda ch: None
        self.last_received = time.monotonic()
        self.closed = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.srtp_errors = 0

    @property
    def connected(self) -> bool:
        return self.dtls.state == "connected"

    async def start(self) -> None:
        self.muxes = await self.network.register(self, self.ice.local_ufrag)

    def local_candidates(self) -> list[Candidate]:
        return self.network.candidates(self.muxes)

    def set_remote(self, sd: SessionDescription) -> None:
        """Apply the remote description's ICE, DTLS and SCTP parameters."""
        ufrag, _ = sd.ice_credentials()
        if self.ice.remote_ufrag and ufrag and ufrag != self.ice.remote_ufrag and self.connected:
            # ICE restart: fresh local credentials; the DTLS association carries on
            old = self.ice.local_ufrag
            self.ice.restart()
            self.network.rekey(self, old, self.ice.local_ufrag)
        self.ice.remote_ufrag = ufrag
        for m in sd.media:
            if m.kind == "application" and m.sctp_port:
                self.remote_sctp_port = m.sctp_port
                if m.max_message_size:
                    self.remote_max_message_size = m.max_message_size
        if self.dtls.state == "new":
            self.dtls.start(sd.dtls_fingerprints())

    # -- network -------------------------------------------------------------------------------

    def on_binding(self, msg: stun.Message, addr: Any, path: Path) -> bool:
        if self.closed:
            return False
        result = self.ice.handle_binding_request(msg, addr)
        if result is None:
            return False
        path.send(result.response)
        self.last_received = time.monotonic()
        if self.path is None:
            log.debug("ice_first_check", name=self.name, remote=f"{addr[0]}:{addr[1]}", protocol=path.protocol)
        if result.nominated:
            if not self.nominated or self.path is not path:
                log.info("ice_selected", name=self.name, protocol=path.protocol,
                         remote=f"{addr[0]}:{addr[1]}")
            self.nominated = True
            self.path = path
        elif self.path is None:
            self.path = path
        return True

    def on_packet(self, data: bytes, path: Path) -> None:
        self.last_received = time.monotonic()
        self.bytes_in += len(data)
        b0 = data[0] if data else 0
        if 127 < b0 < 192:
            rx = self.dtls.rx_srtp
            if rx is None:
                return
            try:
                if is_rtcp(data):
                    self.on_rtcp(rx.unprotect_rtcp(data))
                else:
                    self.on_rtp(rx.unprotect(data))
            except pylibsrtp.Error:
                self.srtp_errors += 1
        elif 19 < b0 < 64:
            if not self.nominated:
                # answer on the pair the client uses until it nominates one
                self.path = path
            self.dtls.handle(data)

    def _send_raw(self, data: bytes) -> None:
        path = self.path
        if path is not None and not self.closed:
            self.bytes_out += len(data)
            path.send(data)

    def send_rtp(self, packet: bytes) -> None:
        tx = self.dtls.tx_srtp
        path = self.path
        if tx is None or path is None or self.closed:
            return
        try:
            data = tx.protect(packet)
        except pylibsrtp.Error:
            return
        self.bytes_out += len(data)
        path.send(data)

    def send_rtcp(self, packet: bytes) -> None:
        tx = self.dtls.tx_srtp
        path = self.path
        if tx is None or path is None or self.closed:
            return
        try:
            data = tx.protect_rtcp(packet)
        except pylibsrtp.Error:
            return
        self.bytes_out += len(data)
        path.send(data)

    # -- DTLS and SCTP -------------------------------------------------------------------------

    def _dtls_connected(self) -> None:
        log.debug("transport_connected", name=self.name)
        if self.remote_sctp_port:
            self.sctp = RTCSctpTransport(self.dtls)  # type: ignore[arg-type]
            self.sctp.on("datachannel", self._on_datachannel)
            asyncio.ensure_future(self.sctp.start(
                RTCSctpCapabilities(maxMessageSize=self.remote_max_message_size), self.remote_sctp_port))
        self.on_connected()

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self.on_datachannel(channel)

    def create_datachannel(self, label: str, ordered: bool = True,
                           max_retransmits: int | None = None) -> RTCDataChannel:
        assert self.sctp is not None
        return RTCDataChannel(self.sctp, RTCDataChannelParameters(
            label=label, ordered=ordered, maxRetransmits=max_retransmits))

    def _dtls_closed(self, reason: str) -> None:
        log.debug("transport_dtls_closed", name=self.name, reason=reason)
        self.on_closed(reason)

    async def close(self) -> None:
        if self.closed:
            return
        if self.sctp is not None:
            try:
                await self.sctp.stop()
            except Exception:
                pass
        self.dtls.stop()
        self.closed = True
        self.network.unregister(self, self.ice.local_ufrag)
