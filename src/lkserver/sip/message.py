"""SIP messages (RFC 3261 §7, §20, §25), without sockets.

`parse(bytes)` turns one datagram (or one framed TCP message) into a `Request` or `Response`;
`bytes(msg)` serializes it. `StreamFramer` cuts a TCP byte stream into messages by
Content-Length (§18.3). Header names are kept canonical (compact forms expanded), values in
order; `Address` parses name-addr / addr-spec values (From, To, Contact, Refer-To).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_MESSAGE = 65535  # a SIP message larger than this is refused (UDP's limit; TCP the same bound)

COMPACT = {"v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact", "l": "Content-Length",
           "c": "Content-Type", "k": "Supported", "s": "Subject", "r": "Refer-To", "o": "Event",
           "e": "Content-Encoding", "u": "Allow-Events", "b": "Referred-By"}
CANONICAL = {n.lower(): n for n in (
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Length", "Content-Type", "Max-Forwards",
    "Route", "Record-Route", "Authorization", "WWW-Authenticate", "Proxy-Authenticate",
    "Proxy-Authorization", "User-Agent", "Server", "Allow", "Supported", "Refer-To", "Referred-By",
    "Event", "Subscription-State", "Expires", "Reason", "Require", "Accept", "P-Asserted-Identity")}
CANONICAL["call-id"] = "Call-ID"
CANONICAL["cseq"] = "CSeq"
CANONICAL["www-authenticate"] = "WWW-Authenticate"

REASONS = {100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 202: "Accepted",
           400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 407: "Proxy Authentication Required", 408: "Request Timeout",
           480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 486: "Busy Here",
           487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
           503: "Service Unavailable", 603: "Decline"}

MAGIC_COOKIE = "z9hG4bK"


class SipParseError(ValueError):
    pass


def canonical(name: str) -> str:
    n = name.strip()
    low = n.lower()
    if low in COMPACT:
        return COMPACT[low]
    return CANONICAL.get(low) or "-".join(p[:1].upper() + p[1:] for p in n.split("-"))


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


@dataclass
class Message:
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def get(self, name: str, default: str = "") -> str:
        name = canonical(name)
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = canonical(name)
        out: list[str] = []
        for k, v in self.headers:
            if k == name:
                out.extend(_split_commas(v) if name in ("Via", "Contact", "Route", "Record-Route") else [v])
        return out

    def set(self, name: str, value: str) -> None:
        name = canonical(name)
        self.remove(name)
        self.headers.append((name, value))

    def add(self, name: str, value: str) -> None:
        self.headers.append((canonical(name), value))

    def remove(self, name: str) -> None:
        name = canonical(name)
        self.headers = [(k, v) for k, v in self.headers if k != name]

    @property
    def call_id(self) -> str:
        return self.get("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        num, _, method = self.get("CSeq").partition(" ")
        try:
            return int(num), method.strip().upper()
        except ValueError:
            raise SipParseError("bad CSeq") from None

    @property
    def branch(self) -> str:
        vias = self.get_all("Via")
        return header_params(vias[0]).get("branch", "") if vias else ""

    def _head(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        lines = [self._head()]
        for k, v in self.headers:
            if k != "Content-Length":
                lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass
class Request(Message):
    method: str = ""
    uri: str = ""

    def _head(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"


@dataclass
class Response(Message):
    status: int = 200
    reason: str = ""

    def _head(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason or REASONS.get(self.status, '')}"


SipMessage = Request | Response


def _split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets."""
    out, cur, quoted, angle = [], [], False, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif ch == "<" and not quoted:
            angle = True
        elif ch == ">" and not quoted:
            angle = False
        if ch == "," and not quoted and not angle:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def header_params(value: str) -> dict[str, str]:
    """`;name=value` parameters of a header value (after any <uri>), lower-cased names."""
    rest = value.split(">", 1)[1] if ">" in value else value
    out = {}
    for part in rest.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k:
            out[k.lower()] = v.strip().strip('"')
    return out


def parse(data: bytes) -> SipMessage:
    if len(data) > MAX_MESSAGE:
        raise SipParseError("message too large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise SipParseError("empty message")
    start = lines[0].strip()
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            k, v = headers[-1]
            headers[-1] = (k, v + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"bad header line {line[:40]!r}")
        headers.append((canonical(name), value.strip()))
    msg: SipMessage
    if start.startswith("SIP/2.0 "):
        parts = start.split(" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            raise SipParseError("bad status line") from None
        msg = Response(headers=headers, status=status, reason=parts[2] if len(parts) > 2 else "")
    else:
        parts = start.split(" ")
        if len(parts) != 3 or parts[2] != "SIP/2.0":
            raise SipParseError("bad request line")
        msg = Request(headers=headers, method=parts[0].upper(), uri=parts[1])
    length = msg.get("Content-Length")
    if length:
        try:
            n = int(length)
        except ValueError:
            raise SipParseError("bad Content-Length") from None
        body = body[:n]
    msg.body = body
    for required in ("Via", "Call-ID", "CSeq", "From", "To"):
        if not msg.get(required):
            raise SipParseError(f"missing {required}")
    msg.cseq  # noqa: B018 - validates
    return msg


class StreamFramer:
    """Cuts a TCP stream into SIP messages (Content-Length framing); bounded buffer."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        self.buf += data
        if len(self.buf) > 4 * MAX_MESSAGE:
            raise SipParseError("stream buffer overflow")
        while True:
            while self.buf[:2] == b"\r\n":  # keep-alive CRLFs
                del self.buf[:2]
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("utf-8", "replace")
            m = re.search(r"^(?:content-length|l)\s*:\s*(\d+)", head, re.IGNORECASE | re.MULTILINE)
            n = int(m.group(1)) if m else 0
            total = end + 4 + n
            if len(self.buf) < total:
                return
            yield bytes(self.buf[:total])
            del self.buf[:total]


@dataclass
class Address:
    """A name-addr or addr-spec: `"Name" <sip:user@host:port;params>;tag=x`."""
    display: str = ""
    uri: str = ""
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> Address:
        value = value.strip()
        if "<" in value:
            display, _, rest = value.partition("<")
            uri, _, params = rest.partition(">")
            return cls(display.strip().strip('"'), uri.strip(), header_params(">" + params))
        uri, _, params = value.partition(";")
        return cls("", uri.strip(), header_params(";" + params) if params else {})

    @property
    def tag(self) -> str:
        return self.params.get("tag", "")

    def __str__(self) -> str:
        s = f'"{self.display}" <{self.uri}>' if self.display else f"<{self.uri}>"
        for k, v in self.params.items():
            s += f";{k}={v}" if v else f";{k}"
        return s


@dataclass
class SipURI:
    scheme: str = "sip"
    user: str = ""
    password: str = ""
    host: str = ""
    port: int | None = None
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, uri: str) -> SipURI:
        scheme, colon, rest = uri.partition(":")
        if not colon or scheme.lower() not in ("sip", "sips", "tel"):
            raise SipParseError(f"not a SIP URI: {uri[:60]!r}")
        rest, _, _headers = rest.partition("?")
        parts = rest.split(";")
        hostport = parts[0]
        params = {}
        for p in parts[1:]:
            k, _, v = p.partition("=")
            params[k.lower()] = v
        user = password = ""
        if "@" in hostport:
            userinfo, _, hostport = hostport.rpartition("@")
            user, _, password = userinfo.partition(":")
        host, port = hostport, None
        if hostport.startswith("["):
            host, _, p = hostport[1:].partition("]")
            port = int(p[1:]) if p.startswith(":") and p[1:].isdigit() else None
        elif ":" in hostport:
            host, _, p = hostport.rpartition(":")
            port = int(p) if p.isdigit() else None
        if scheme.lower() == "tel":
            user, host = hostport, ""
        return cls(scheme.lower(), user, password, host, port, params)

    def __str__(self) -> str:
        s = f"{self.scheme}:"
        if self.user:
            s += self.user + "@"
        s += f"[{self.host}]" if ":" in self.host else self.host
        if self.port:
            s += f":{self.port}"
        for k, v in self.params.items():
            s += f";{k}={v}" if v else f";{k}"
        return s


def response_to(req: Request, status: int, reason: str = "", *, to_tag: str = "",
                headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> Response:
    """A response copying Via, From, To (+ our tag), Call-ID and CSeq from the request (§8.2.6)."""
    resp = Response(status=status, reason=reason)
    for k, v in req.headers:
        if k in ("Via", "From", "Call-ID", "CSeq", "Record-Route"):
            resp.headers.append((k, v))
    to = req.get("To")
    if to_tag and "tag=" not in to:
        to += f";tag={to_tag}"
    resp.headers.insert(2, ("To", to))
    for k, v in headers or []:
        resp.add(k, v)
    resp.body = body
    return resp
