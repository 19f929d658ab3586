"""The Twirp client the services share: protobuf over HTTP POST, errors as `ServerError`.

Requests are what `livekit-api` sends (reference clients.md §1): `POST {url}/twirp/livekit.<Svc>/<Method>`,
`Content-Type: application/protobuf`, `Authorization: Bearer <jwt>`, a request id header. Errors
are Twirp JSON `{code, msg, meta}` whatever their content type.
"""

from __future__ import annotations

import uuid
from typing import Optional, Type, TypeVar
from urllib.parse import urlparse

import aiohttp
from google.protobuf.message import Message

from .. import __version__

T = TypeVar("T", bound=Message)

USER_AGENT = f"lkserver-api-python/{__version__}"
REQUEST_ID_HEADER = "X-Livekit-Request-Id"


class ServerError(Exception):
    """A Twirp error answered by the server (alias: TwirpError)."""

    def __init__(self, code: str, msg: str, *, status: int, metadata: Optional[dict[str, str]] = None) -> None:
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
        return self._metadata

    def __str__(self) -> str:
        out = f"ServerError(code={self.code}, message={self.message}, status={self.status}"
        if self.metadata:
            out += f", metadata={self.metadata}"
        return out + ")"


TwirpError = ServerError


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


TwirpErrorCode = ServerErrorCode


class TwirpClient:
    def __init__(self, session: aiohttp.ClientSession, host: str, pkg: str = "livekit",
                 prefix: str = "twirp") -> None:
        p = urlparse(host)
        scheme = p.scheme.replace("ws", "http", 1) if p.scheme.startswith("ws") else p.scheme
        self.host = f"{scheme}://{p.netloc}{p.path}".rstrip("/")
        self.pkg = pkg
        self.prefix = prefix
        self._session = session

    async def request(self, service: str, method: str, data: Message, headers: dict[str, str],
                      response_class: Type[T], *, timeout: Optional[aiohttp.ClientTimeout] = None) -> T:
        url = f"{self.host}/{self.prefix}/{self.pkg}.{service}/{method}"
        headers = dict(headers)
        headers["User-Agent"] = USER_AGENT
        headers["Content-Type"] = "application/protobuf"
        headers[REQUEST_ID_HEADER] = str(uuid.uuid4())
        kwargs = {"timeout": timeout} if timeout is not None else {}
        async with self._session.post(url, headers=headers, data=data.SerializeToString(), **kwargs) as resp:
            if resp.status == 200:
                return response_class.FromString(await resp.read())
            try:
                err = await resp.json(content_type=None)
                if not isinstance(err, dict):
                    err = {}
            except Exception:
                err = {}
            raise ServerError(str(err.get("code", "unknown")), str(err.get("msg", "")),
                              status=resp.status, metadata=err.get("meta"))
