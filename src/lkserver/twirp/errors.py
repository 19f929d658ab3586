"""Twirp errors: codes, their HTTP statuses and LiveKit's message conventions.

Twirp spec v7 (twitchtv/twirp errors.go) for the code table. LiveKit's server turns psrpc
errors (room/participant not found, limits) into Twirp errors whose message carries the prefix
`twirp error unknown: ` (protocol utils/xtwirp/errors.go); `TwirpError.psrpc()` reproduces it.
"""

from __future__ import annotations

from typing import Mapping

CANCELED = "canceled"
UNKNOWN = "unknown"
INVALID_ARGUMENT = "invalid_argument"
MALFORMED = "malformed"
DEADLINE_EXCEEDED = "deadline_exceeded"
NOT_FOUND = "not_found"
BAD_ROUTE = "bad_route"
ALREADY_EXISTS = "already_exists"
PERMISSION_DENIED = "permission_denied"
UNAUTHENTICATED = "unauthenticated"
RESOURCE_EXHAUSTED = "resource_exhausted"
FAILED_PRECONDITION = "failed_precondition"
ABORTED = "aborted"
OUT_OF_RANGE = "out_of_range"
UNIMPLEMENTED = "unimplemented"
INTERNAL = "internal"
UNAVAILABLE = "unavailable"
DATALOSS = "dataloss"

HTTP_STATUS: Mapping[str, int] = {
    CANCELED: 408, UNKNOWN: 500, INVALID_ARGUMENT: 400, MALFORMED: 400,
    DEADLINE_EXCEEDED: 408, NOT_FOUND: 404, BAD_ROUTE: 404, ALREADY_EXISTS: 409,
    PERMISSION_DENIED: 403, UNAUTHENTICATED: 401, RESOURCE_EXHAUSTED: 429,
    FAILED_PRECONDITION: 412, ABORTED: 409, OUT_OF_RANGE: 400, UNIMPLEMENTED: 501,
    INTERNAL: 500, UNAVAILABLE: 503, DATALOSS: 500,
}

PSRPC_PREFIX = "twirp error unknown: "
MAX_MSG = 1 << 20


class TwirpError(Exception):
    """An error answered as Twirp JSON `{code, msg, meta}`."""

    def __init__(self, code: str, msg: str, meta: Mapping[str, str] | None = None) -> None:
        super().__init__(msg)
        if code not in HTTP_STATUS:
            code = UNKNOWN
        self.code = code
        self.msg = msg[:MAX_MSG]
        self.meta = dict(meta or {})

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    @classmethod
    def psrpc(cls, code: str, msg: str) -> "TwirpError":
        """An error LiveKit raises as a psrpc error: the visible message gains the prefix."""
        return cls(code, PSRPC_PREFIX + msg)

    @classmethod
    def invalid_argument(cls, argument: str, detail: str) -> "TwirpError":
        """twirp.InvalidArgumentError: msg "<argument> <detail>", meta {argument}."""
        return cls(INVALID_ARGUMENT, f"{argument} {detail}", {"argument": argument})

    def __repr__(self) -> str:
        return f"TwirpError({self.code!r}, {self.msg!r})"


# The errors LiveKit's services answer with (livekit pkg/service/errors.go), as psrpc errors.
def room_not_found() -> TwirpError:
    return TwirpError.psrpc(NOT_FOUND, "requested room does not exist")


def participant_not_found() -> TwirpError:
    return TwirpError.psrpc(NOT_FOUND, "participant does not exist")


def no_response() -> TwirpError:
    """What a psrpc call to a room or participant that nobody hosts answers."""
    return TwirpError.psrpc(UNAVAILABLE, "no response from servers")


def permission_denied() -> TwirpError:
    """A missing grant: LiveKit answers `unauthenticated`, not `permission_denied`."""
    return TwirpError(UNAUTHENTICATED, "permissions denied")
