"""ICE-lite (sans-I/O): answer the client's connectivity checks, learn and select its address.

RFC 8445 §2.5 / §7.3: an ICE-lite agent only answers Binding requests, authenticated with its
own password; the controlling peer (every LiveKit client) nominates a pair with USE-CANDIDATE.
STUN encoding is aioice's (RFC 5389). The server advertises `a=ice-lite` and its host
candidates (UDP mux port, passive ICE-TCP), as livekit-server can with `rtc.use_ice_lite`.
"""

from __future__ import annotations

import secrets
import string
from typing import Any, NamedTuple

from aioice import stun

_ICE_CHARS = string.ascii_letters + string.digits + "+/"


def random_ice_string(n: int) -> str:
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(n))


def is_stun(data: bytes) -> bool:
    """RFC 7983 demultiplexing: STUN starts with 0 or 1 in the first byte, magic cookie at 4."""
    return len(data) >= 20 and data[0] < 2 and data[4:8] == b"\x21\x12\xa4\x42"


def parse_binding_request(data: bytes) -> stun.Message | None:
    try:
        msg = stun.parse_message(data)
    except (ValueError, KeyError, IndexError):
        return None
    if msg.message_method != stun.Method.BINDING or msg.message_class != stun.Class.REQUEST:
        return None
    return msg


def local_ufrag_of(msg: stun.Message) -> str:
    """The server's ufrag from USERNAME ("<server ufrag>:<client ufrag>")."""
    username = msg.attributes.get("USERNAME", "")
    return username.split(":", 1)[0] if isinstance(username, str) else ""


class CheckResult(NamedTuple):
    response: bytes
    nominated: bool


class IceLiteAgent:
    def __init__(self) -> None:
        self.local_ufrag = random_ice_string(8)
        self.local_pwd = random_ice_string(24)
        self.remote_ufrag = ""

    def restart(self) -> None:
        """New local credentials (an ICE restart offer from the client)."""
        self.local_ufrag = random_ice_string(8)
        self.local_pwd = random_ice_string(24)

    def handle_binding_request(self, msg: stun.Message, addr: Any) -> CheckResult | None:
        """A response to an authenticated check for us; None for checks we must ignore."""
        username = msg.attributes.get("USERNAME", "")
        if not isinstance(username, str) or not username.startswith(self.local_ufrag + ":"):
            return None
        if not msg.check_message_integrity(self.local_pwd.encode()):
            return None
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE,
                                transaction_id=msg.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
        response.add_message_integrity(self.local_pwd.encode())
        return CheckResult(bytes(response), "USE-CANDIDATE" in msg.attributes)
