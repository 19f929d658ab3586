"""Egress errors: what LiveKit's egress answers, as a code and a message, without Twirp.

LiveKit's egress returns psrpc errors (egress pkg/errors/errors.go); services/egress.py turns an
EgressError into the Twirp error LiveKit's server would send (code, and the psrpc message prefix).
The codes are Twirp's names for the psrpc codes.
"""

from __future__ import annotations

INVALID_ARGUMENT = "invalid_argument"
NOT_FOUND = "not_found"
FAILED_PRECONDITION = "failed_precondition"
RESOURCE_EXHAUSTED = "resource_exhausted"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"


class EgressError(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg

    def __repr__(self) -> str:
        return f"EgressError({self.code!r}, {self.msg!r})"
