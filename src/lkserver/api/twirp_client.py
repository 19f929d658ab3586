"""The Twirp client the services share: protobuf over HTTP POST, errors as `ServerError`.

Requests are what `livekit-api` sends (reference clients.md §1): `POST {url}/twirp/livekit.<Svc>/<Method>`,
`Content-Type: application/protobuf`, `Authorization: Bearer <jwt>`, a request id header. A 200 body
is the binary response message. Errors are Twirp JSON `{code, msg, meta}` whatever their content
type; a non-Twirp error body (a proxy's page, a plain-text 401) gets the code the Twirp spec maps
its HTTP status to, and its text as the message, instead of an empty "unknown".
"""

from __future__ import annotations

import json
import uuid
from typing import TypeVar
from urllib.parse import urlparse

import aiohttp
from google.protobuf.message import Message

from .version import __version__

T = TypeVar("T", bound=Message)

DEFAULT_PREFIX = "twirp"
USER_AGENT = f"lkserver-api-python/{__version__}"
# a per-request idempotency key, as the official SDK sends
REQUEST_ID_HEADER = "X-Livekit-Request-Id"
# how much of a non-Twirp error body is kept as the message
MAX_INTERMEDIARY_BODY = 1024


class ServerError(Exception):
    """A Twirp error answered by the server (alias: TwirpError).

    `code` is the Twirp code (`ServerErrorCode`), `message` the server's text, `status` the HTTP
    status, `metadata` the Twirp `meta` map.
    """

    def __init__(self, code: str, msg: str, *, status: int,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self._code = code
        self._msg = msg
        self._status = status
        self._metadata = metadata or {}

    @property
    def code(self) -> str:
        return self._code

    @property
    def message(self) -> str:
        return self._msg

    @property
    def status(self) -> int:
        """HTTP status code"""
        return self._status

    @property
    def metadata(self) -> dict[str, str]:
        """Server-provided error metadata"""
        return self._metadata

    def __str__(self) -> str:
        out = f"ServerError(code={self.code}, message={self.message}, status={self.status}"
        if self.metadata:
            out += f", metadata={self.metadata}"
        return out + ")"


# Deprecated alias of ServerError, as in the official SDK.
TwirpError = ServerError

_SIP_META_KEYS = ("sip_status_code", "sip_status", "sip_transfer_reason", "error_details")


class SipCallError(ServerError):
    """A ServerError from dialing (`create_sip_participant`) or transferring a SIP call that failed
    with a SIP status or a transfer reason; the SIP details are properties, the rest stays in
    `metadata`."""

    @property
    def sip_status_code(self) -> int | None:
        """The SIP response code of the failed call, e.g. 486 (Busy Here)."""
        raw = self.metadata.get("sip_status_code")
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    @property
    def sip_status(self) -> str | None:
        """The SIP reason phrase of the failed call, e.g. "Busy Here"."""
        return self.metadata.get("sip_status")

    @property
    def sip_transfer_reason(self) -> str | None:
        """Why a transfer failed, e.g. "STR_RINGING_TIMEOUT"."""
        return self.metadata.get("sip_transfer_reason")

    @property
    def sip_transfer_id(self) -> str | None:
        """The id of the failed transfer."""
        return self.metadata.get("sip_transfer_id")

    @classmethod
    def from_server_error(cls, err: ServerError) -> SipCallError:
        return cls(err.code, err.message, status=err.status, metadata=err.metadata)

    def __str__(self) -> str:
        code = self.metadata.get("sip_status_code")
        reason = self.metadata.get("sip_transfer_reason")
        if code is None and reason is None:
            return super().__str__()
        parts = []
        if reason is not None:
            parts.append(reason)
        if code is not None:
            status = self.metadata.get("sip_status")
            parts.append(f"{code} {status}" if status else str(code))
        what = "SIP transfer failed" if reason is not None else "SIP call failed"
        out = f"{what}: {', '.join(parts)} ({self.code})"
        extra = {k: v for k, v in self.metadata.items() if k not in _SIP_META_KEYS}
        if extra:
            out += " [" + ", ".join(f"{k}={v}" for k, v in extra.items()) + "]"
        return out


class ServerErrorCode:
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
    DATA_LOSS = "dataloss"


# Deprecated alias of ServerErrorCode, as in the official SDK.
TwirpErrorCode = ServerErrorCode

# Twirp spec, "Errors from intermediaries": the code a client reports for a non-Twirp error body
_INTERMEDIARY_CODES = {
    400: ServerErrorCode.INTERNAL,
    401: ServerErrorCode.UNAUTHENTICATED,
    403: ServerErrorCode.PERMISSION_DENIED,
    404: ServerErrorCode.BAD_ROUTE,
    429: ServerErrorCode.UNAVAILABLE,
    502: ServerErrorCode.UNAVAILABLE,
    503: ServerErrorCode.UNAVAILABLE,
    504: ServerErrorCode.UNAVAILABLE,
}


def error_from_response(status: int, body: bytes) -> ServerError:
    """The ServerError for a non-200 answer (sans-I/O: status and body in, exception out)."""
    try:
        err = json.loads(body)
    except (ValueError, RecursionError):
        err = None
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        meta = err.get("meta")
        return ServerError(err["code"], str(err.get("msg", "")), status=status,
                           metadata={str(k): str(v) for k, v in meta.items()}
                           if isinstance(meta, dict) else None)
    text = body[:MAX_INTERMEDIARY_BODY].decode("utf-8", "replace").strip()
    return ServerError(_INTERMEDIARY_CODES.get(status, ServerErrorCode.UNKNOWN), text, status=status,
                       metadata={"http_error_from_intermediary": "true", "status_code": str(status)})


class TwirpClient:
    """POSTs protobuf requests to one server; `failover` is accepted for signature compatibility
    with the official SDK, whose region failover only applies to LiveKit Cloud hosts."""

    def __init__(self, session: aiohttp.ClientSession, host: str, pkg: str = "livekit",
                 prefix: str = DEFAULT_PREFIX, failover: bool = True) -> None:
        p = urlparse(host)
        scheme = p.scheme.replace("ws", "http", 1) if p.scheme.startswith("ws") else p.scheme
        self.host = f"{scheme}://{p.netloc}{p.path}".rstrip("/")
        self.pkg = pkg
        self.prefix = prefix
        self._session = session

    async def request(self, service: str, method: str, data: Message, headers: dict[str, str],
                      response_class: type[T], *, timeout: aiohttp.ClientTimeout | None = None) -> T:
        """Call `<pkg>.<service>/<method>`; the response message, or ServerError."""
        url = f"{self.host}/{self.prefix}/{self.pkg}.{service}/{method}"
        headers = dict(headers)
        headers["User-Agent"] = USER_AGENT
        headers["Content-Type"] = "application/protobuf"
        headers[REQUEST_ID_HEADER] = str(uuid.uuid4())
        body = data.SerializeToString()
        # no timeout given: the session's (LiveKitAPI's `timeout`) applies; passing None to
        # aiohttp would mean no timeout at all
        if timeout is None:
            request = self._session.post(url, headers=headers, data=body)
        else:
            request = self._session.post(url, headers=headers, data=body, timeout=timeout)
        async with request as resp:
            answer = await resp.read()
            if resp.status == 200:
                return response_class.FromString(answer)
            raise error_from_response(resp.status, answer)
