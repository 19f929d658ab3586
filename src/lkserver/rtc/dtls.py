"""DTLS-SRTP (RFC 5764) as the passive side: handshake, fingerprint check, SRTP keys, app data.

The server is always the DTLS server (it answers `a=setup:passive`, and offers `actpass` which
LiveKit clients answer `active`). OpenSSL runs on memory BIOs (pyOpenSSL), so datagrams come in
through `handle()` and go out through the `send` callback; retransmission timers run on the
event loop. Certificates and SRTP profiles are aiortc's. The object also offers the small
interface aiortc's RTCSctpTransport expects of a DTLS transport (`_role`, `state`,
`_register_data_receiver`, `_send_data`), so SCTP data channels run over it unchanged.

A lost flight is resent as soon as the peer retransmits its own (RFC 6347 §4.2.4, "read
retransmit"): OpenSSL ignores a repeated ClientHello or client flight and waits for its own timer
(1 s, then 2 s, 4 s ...), while clients retransmit within ~100 ms, so on a lossy link one lost
datagram cost a second or more of connection set-up, and a few in a row a failed connect.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

from aiortc.rtcdtlstransport import (
    SRTP_PROFILES,
    X509_DIGEST_ALGORITHMS,
    RTCCertificate,
    certificate_digest,
)
from OpenSSL import SSL
from pylibsrtp import Policy, Session

from ..logs import get_logger
from .srtp import SrtpContext

log = get_logger("lkserver.rtc.dtls")

MAX_DATAGRAM = 1 << 16
MAX_RESENDS = 16  # flights resent on the peer's retransmissions, per association
CONTENT_CCS, CONTENT_HANDSHAKE = 20, 22
CLIENT_HELLO = 1


class DtlsEndpoint:
    def __init__(self, certificate: RTCCertificate, send: Callable[[bytes], None],
                 on_connected: Callable[[], None], on_closed: Callable[[str], None]) -> None:
        self._certificate = certificate
        self._send = send
        self._on_connected = on_connected
        self._on_closed = on_closed
        self._ssl: Optional[SSL.Connection] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._data_receiver: Any = None
        self._flight: list[bytes] = []  # the datagrams of our latest handshake flight
        self._resends = 0
        self.remote_fingerprints: list[tuple[str, str]] = []
        self.state = "new"  # new, connecting, connected, closed, failed
        self._role = "server"
        self.rx_srtp: Optional[SrtpContext] = None
        self.tx_srtp: Optional[SrtpContext] = None

    # -- handshake -----------------------------------------------------------------------------

    def start(self, remote_fingerprints: list[tuple[str, str]]) -> None:
        self.remote_fingerprints = remote_fingerprints
        if self._ssl is not None:
            return
        ctx = self._certificate._create_ssl_context(srtp_profiles=SRTP_PROFILES)
        self._ssl = SSL.Connection(ctx)
        self._ssl.set_accept_state()
        self.state = "connecting"

    def handle(self, data: bytes) -> None:
        """A DTLS record from the peer."""
        ssl = self._ssl
        if ssl is None or self.state in ("closed", "failed"):
            return
        try:
            ssl.bio_write(data)
        except SSL.Error:
            return
        if self.state == "connecting":
            try:
                ssl.do_handshake()
            except SSL.WantReadError:
                self._answer_flight(self._flush(), repeated=is_client_hello(data))
                self._arm_timer()
                return
            except SSL.Error as e:
                log.debug("dtls_handshake_failed", error=str(e)[:120])
                self._fail("handshake failed")
                return
            self._answer_flight(self._flush(), repeated=False)
            if not self._handshake_complete():
                return
        while True:
            try:
                app = ssl.recv(MAX_DATAGRAM)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._close("closed by peer")
                return
            except SSL.Error:
                break
            if app and self._data_receiver is not None:
                asyncio.ensure_future(self._data_receiver._handle_data(app))
        sent = self._flush()
        if data[0] in (CONTENT_CCS, CONTENT_HANDSHAKE):  # the peer repeats its last flight: ours was lost
            self._answer_flight(sent, repeated=True)
        self._arm_timer()

    def _answer_flight(self, sent: list[bytes], repeated: bool) -> None:
        """Keep what the peer's record made us send as our current flight; when it made us send
        nothing and `repeated` (the record repeats the peer's previous flight), send ours again."""
        if sent:
            self._flight = sent
        elif repeated and self._flight and self._resends < MAX_RESENDS:
            self._resends += 1
            for datagram in self._flight:
                self._send(datagram)

    def _handshake_complete(self) -> bool:
        assert self._ssl is not None
        cert = self._ssl.get_peer_certificate(as_cryptography=True)
        supported = matched = 0
        for algorithm, value in self.remote_fingerprints:
            if algorithm in X509_DIGEST_ALGORITHMS:
                supported += 1
                if cert is not None and value.upper() == certificate_digest(cert, algorithm):
                    matched += 1
        if not supported or matched != supported:
            self._fail("fingerprint mismatch")
            return False
        selected = self._ssl.get_selected_srtp_profile()
        profile = next((p for p in SRTP_PROFILES if p.openssl_profile == selected), None)
        if profile is None:
            self._fail("no SRTP profile negotiated")
            return False
        material = self._ssl.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length))
        # as DTLS server we send with the server key (index 1) and receive with the client's
        tx_key = profile.get_key_and_salt(material, 1)
        rx_key = profile.get_key_and_salt(material, 0)
        self.rx_srtp = SrtpContext(Session(_policy(rx_key, Policy.SSRC_ANY_INBOUND, profile.libsrtp_profile)))
        self.tx_srtp = SrtpContext(Session(_policy(tx_key, Policy.SSRC_ANY_OUTBOUND, profile.libsrtp_profile)))
        self.state = "connected"
        self._on_connected()
        return True

    def _flush(self) -> list[bytes]:
        """Send what OpenSSL wrote; returns the datagrams sent."""
        sent: list[bytes] = []
        ssl = self._ssl
        while ssl is not None:
            try:
                data = ssl.bio_read(MAX_DATAGRAM)
            except SSL.Error:
                break
            if not data:
                break
            self._send(data)
            sent.append(data)
        return sent

    def _arm_timer(self) -> None:
        if self._ssl is None or self._timer is not None:
            return
        timeout = self._ssl.DTLSv1_get_timeout()
        if timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(max(timeout, 0.01), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._ssl is None or self.state in ("closed", "failed"):
            return
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error:
            pass
        sent = self._flush()
        if sent and self.state == "connecting":
            self._flight = sent
        self._arm_timer()

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self._cancel_timer()
        self._on_closed(reason)

    def _close(self, reason: str) -> None:
        if self.state in ("closed", "failed"):
            return
        self.state = "closed"
        self._cancel_timer()
        self._on_closed(reason)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def stop(self) -> None:
        """Send close_notify (best effort) and stop."""
        if self._ssl is not None and self.state == "connected":
            try:
                self._ssl.shutdown()
            except SSL.Error:
                pass
            self._flush()
        self.state = "closed"
        self._cancel_timer()
        if self._data_receiver is not None:
            # lets the SCTP association notice the transport is gone
            self._data_receiver = None

    # -- the DTLS transport interface of aiortc's RTCSctpTransport -----------------------------

    def _register_data_receiver(self, receiver: Any) -> None:
        self._data_receiver = receiver

    def _unregister_data_receiver(self, receiver: Any) -> None:
        if self._data_receiver is receiver:
            self._data_receiver = None

    async def _send_data(self, data: bytes) -> None:
        if self.state != "connected" or self._ssl is None:
            raise ConnectionError("DTLS transport is not connected")
        try:
            self._ssl.send(data)
        except SSL.Error as e:
            raise ConnectionError(str(e)) from None
        self._flush()


def is_client_hello(datagram: bytes) -> bool:
    """Whether a datagram starts with a ClientHello (a handshake record of epoch 0)."""
    return (len(datagram) > 13 and datagram[0] == CONTENT_HANDSHAKE and datagram[3:5] == b"\x00\x00"
            and datagram[13] == CLIENT_HELLO)


def _policy(key: bytes, ssrc_type: int, profile: int) -> Policy:
    p = Policy(key=key, ssrc_type=ssrc_type, srtp_profile=profile)
    # clients probe bandwidth by resending old packets; LiveKit disables replay protection
    p.allow_repeat_tx = True
    p.window_size = 1024
    return p


def fingerprint_lines(certificate: RTCCertificate) -> list[str]:
    return [f"a=fingerprint:{f.algorithm} {f.value}" for f in certificate.getFingerprints()
            if f.algorithm == "sha-256"]
