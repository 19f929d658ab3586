"""RTMP server side of one connection (sans-I/O): handshake, chunk stream, commands, media.

Adobe's RTMP 1.0 specification: §5.2 handshake (plain, and the digest variant Flash Player 9 and
later clients send, answered with the server digest as nginx-rtmp and Adobe FMS do), §5.3 chunk
stream (basic and message headers of the four formats, extended timestamps, chunk size), §5.4
protocol control messages, §7 commands of NetConnection/NetStream as encoders use them to
publish (connect, releaseStream, FCPublish, createStream, publish, FCUnpublish, deleteStream).
Audio and video messages come out as FLV tag bodies (flv.py reads them).

    conn = RtmpServerConnection()
    for event in conn.receive_data(data):   # raises RtmpError on malformed bytes
        ...                                 # PublishRequested -> conn.accept_publish() / reject_publish()
    sock.send(conn.data_to_send())

Every buffer is bounded: a message may not exceed `max_message_size`, at most `max_chunk_streams`
chunk streams may be open, and the peer's chunk size is capped to the message limit.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from . import amf0

HANDSHAKE_SIZE = 1536
RTMP_VERSION = 3
DEFAULT_CHUNK_SIZE = 128
OUT_CHUNK_SIZE = 4096
WINDOW_ACK_SIZE = 2_500_000
STREAM_ID = 1  # the one message stream a publisher gets from createStream

# message types (§5.4, §7.1)
SET_CHUNK_SIZE, ABORT, ACK, USER_CONTROL, WINDOW_ACK, SET_PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
AUDIO, VIDEO = 8, 9
DATA_AMF3, SHARED_OBJECT_AMF3, COMMAND_AMF3 = 15, 16, 17
DATA_AMF0, SHARED_OBJECT_AMF0, COMMAND_AMF0 = 18, 19, 20
AGGREGATE = 22

# user control events (§7.1.7)
STREAM_BEGIN, PING_REQUEST, PING_RESPONSE = 0, 6, 7

# chunk stream ids we send on
CSID_CONTROL, CSID_COMMAND, CSID_STATUS = 2, 3, 5

# Flash Player 9+ digest handshake keys (public constants of the protocol)
_FP_KEY = b"Genuine Adobe Flash Player 001" + bytes.fromhex(
    "f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
_FMS_KEY = b"Genuine Adobe Flash Media Server 001" + bytes.fromhex(
    "f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
_SERVER_VERSION = bytes((4, 5, 0, 1))


class RtmpError(Exception):
    """The peer broke the protocol; the connection must be closed."""


class State(Enum):
    AWAIT_C0C1 = "await_c0c1"
    AWAIT_C2 = "await_c2"
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class Connected:
    """`connect`: the application (first path segment of the URL) and its parameters."""

    app: str
    tc_url: str
    params: dict


@dataclass
class PublishRequested:
    """`publish`: answer with accept_publish() or reject_publish()."""

    app: str
    name: str  # the publishing name as sent (may contain a path or a query)
    publish_type: str

    @property
    def stream_key(self) -> str:
        """The last path component, without a query (LiveKit: `path.Split(PublishingName)`)."""
        return self.name.split("?", 1)[0].rsplit("/", 1)[-1]


@dataclass
class Media:
    kind: str  # "audio" | "video"
    timestamp: int  # milliseconds (32-bit, as carried)
    payload: bytes  # an FLV audio or video tag body


@dataclass
class MetaData:
    values: dict


@dataclass
class Unpublished:
    """The publisher ended the stream (FCUnpublish, closeStream or deleteStream)."""

    reason: str


Event = Connected | PublishRequested | Media | MetaData | Unpublished


@dataclass
class _ChunkStream:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False  # the last header carried an extended timestamp
    payload: bytearray = field(default_factory=bytearray)


def _digest_offset(c1: bytes, base: int) -> int:
    return (c1[base] + c1[base + 1] + c1[base + 2] + c1[base + 3]) % 728 + base + 4


def _digest_at(data: bytes, offset: int, key: bytes) -> bytes:
    return hmac.new(key, data[:offset] + data[offset + 32:], hashlib.sha256).digest()


def find_client_digest(c1: bytes) -> tuple[int, bytes] | None:
    """(scheme base, digest) when C1 carries a valid Flash Player digest (scheme 772 or 8)."""
    for base in (772, 8):
        offset = _digest_offset(c1, base)
        digest = c1[offset:offset + 32]
        if hmac.compare_digest(_digest_at(c1, offset, _FP_KEY[:30]), digest):
            return base, digest
    return None


def handshake_response(c1: bytes, now_ms: int | None = None) -> bytes:
    """S0 + S1 + S2 for a client's C1."""
    if now_ms is None:
        now_ms = int(time.monotonic() * 1000)
    s1 = bytearray(struct.pack("!I", now_ms & 0xFFFFFFFF) + bytes(4) + os.urandom(HANDSHAKE_SIZE - 8))
    found = find_client_digest(c1) if c1[4:8] != bytes(4) else None
    if found is None:
        return bytes((RTMP_VERSION,)) + bytes(s1) + c1  # plain handshake: S2 echoes C1
    base, client_digest = found
    s1[4:8] = _SERVER_VERSION
    offset = _digest_offset(s1, base)
    s1[offset:offset + 32] = _digest_at(bytes(s1), offset, _FMS_KEY[:36])
    s2 = bytearray(os.urandom(HANDSHAKE_SIZE))
    key = hmac.new(_FMS_KEY, client_digest, hashlib.sha256).digest()
    s2[-32:] = hmac.new(key, bytes(s2[:-32]), hashlib.sha256).digest()
    return bytes((RTMP_VERSION,)) + bytes(s1) + bytes(s2)


def encode_chunks(csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes,
                  chunk_size: int) -> bytes:
    """One message as chunks: a format 0 header, then format 3 continuations."""
    ts = min(timestamp, 0xFFFFFF)
    ext = struct.pack("!I", timestamp & 0xFFFFFFFF) if timestamp >= 0xFFFFFF else b""
    basic0 = _basic_header(0, csid)
    basic3 = _basic_header(3, csid)
    out = bytearray(basic0)
    out += ts.to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes((type_id,))
    out += struct.pack("<I", stream_id) + ext
    for i in range(0, max(len(payload), 1), chunk_size):
        if i:
            out += basic3 + ext
        out += payload[i:i + chunk_size]
    return bytes(out)


def _basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))


class RtmpServerConnection:
    def __init__(self, *, max_message_size: int = 8 << 20, max_chunk_streams: int = 64) -> None:
        self.state = State.AWAIT_C0C1
        self.max_message_size = max_message_size
        self.max_chunk_streams = max_chunk_streams
        self.app = ""
        self.publishing = False
        self._pending_publish: PublishRequested | None = None
        self._buf = bytearray()
        self._out = bytearray()
        self._streams: dict[int, _ChunkStream] = {}
        self._in_chunk_size = DEFAULT_CHUNK_SIZE
        self._out_chunk_size = OUT_CHUNK_SIZE
        self._peer_window = 0  # ack every this many bytes (the peer's Window Acknowledgement Size)
        self._received = 0
        self._acked = 0
        self._publish_txn = 0.0
        self.close_after_send = False

    # -- public API ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self._buf += data
        self._received += len(data)
        events: list[Event] = []
        try:
            while True:
                if self.state is State.AWAIT_C0C1:
                    if len(self._buf) < 1 + HANDSHAKE_SIZE:
                        break
                    if self._buf[0] != RTMP_VERSION:
                        raise RtmpError(f"unsupported RTMP version {self._buf[0]} (encrypted RTMP is not served)")
                    c1 = bytes(self._buf[1:1 + HANDSHAKE_SIZE])
                    del self._buf[:1 + HANDSHAKE_SIZE]
                    self._out += handshake_response(c1)
                    self.state = State.AWAIT_C2
                elif self.state is State.AWAIT_C2:
                    if len(self._buf) < HANDSHAKE_SIZE:
                        break
                    del self._buf[:HANDSHAKE_SIZE]  # C2 echoes S1; nothing in it is needed
                    self.state = State.OPEN
                elif self.state is State.OPEN:
                    if not self._read_chunk(events):
                        break
                else:
                    break
        except RtmpError:
            self.state = State.CLOSED
            raise
        except (amf0.AmfError, struct.error, IndexError, ValueError) as e:
            self.state = State.CLOSED
            raise RtmpError(f"malformed message: {e}") from None
        self._maybe_ack()
        return events

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def accept_publish(self) -> None:
        req = self._pending_publish
        if req is None:
            return
        self._pending_publish = None
        self.publishing = True
        self._send(CSID_CONTROL, USER_CONTROL, 0, struct.pack("!HI", STREAM_BEGIN, STREAM_ID))
        self._status("status", "NetStream.Publish.Start", f"{req.name} is now published.", details=req.name)

    def reject_publish(self, description: str, code: str = "NetStream.Publish.BadName") -> None:
        """Refuse the publish with an error status; the connection closes once it is sent."""
        self._pending_publish = None
        self._status("error", code, description)
        self.close_after_send = True

    def close(self) -> None:
        self.state = State.CLOSED

    # -- chunk stream (§5.3) -------------------------------------------------------------------

    def _read_chunk(self, events: list[Event]) -> bool:
        buf = self._buf
        n = len(buf)
        if n < 1:
            return False
        fmt, csid = buf[0] >> 6, buf[0] & 0x3F
        pos = 1
        if csid == 0:
            if n < 2:
                return False
            csid, pos = 64 + buf[1], 2
        elif csid == 1:
            if n < 3:
                return False
            csid, pos = 64 + buf[1] + (buf[2] << 8), 3
        header_size = (11, 7, 3, 0)[fmt]
        if n < pos + header_size:
            return False
        cs = self._streams.get(csid)
        if cs is None:
            if fmt != 0:
                raise RtmpError(f"chunk stream {csid} starts without a full header")
            if len(self._streams) >= self.max_chunk_streams:
                raise RtmpError("too many chunk streams")
            cs = _ChunkStream()
        starting = not cs.payload
        ts_field = 0
        if fmt <= 2:
            ts_field = int.from_bytes(buf[pos:pos + 3], "big")
        if fmt <= 1:
            length = int.from_bytes(buf[pos + 3:pos + 6], "big")
            type_id = buf[pos + 6]
        else:
            length, type_id = cs.length, cs.type_id
        stream_id = struct.unpack_from("<I", buf, pos + 7)[0] if fmt == 0 else cs.stream_id
        pos += header_size
        extended = ts_field == 0xFFFFFF if fmt <= 2 else cs.extended
        ext_value = 0
        if extended:
            if n < pos + 4:
                return False
            ext_value = struct.unpack_from("!I", buf, pos)[0]
            pos += 4
        if fmt <= 1 and not starting:
            raise RtmpError("a new message header interrupts an unfinished message")
        if length > self.max_message_size:
            raise RtmpError(f"message of {length} bytes exceeds the limit of {self.max_message_size}")
        take = min(self._in_chunk_size, length - len(cs.payload))
        if n < pos + take:
            return False
        # the whole chunk is here: commit its header
        if csid not in self._streams:
            self._streams[csid] = cs
        if starting:
            value = ext_value if extended else ts_field
            if fmt == 0:
                # §5.3.1.2.4: a type 3 chunk after a type 0 one takes its timestamp as the delta
                cs.timestamp, cs.delta = value, value
            elif fmt in (1, 2):
                cs.delta = value
                cs.timestamp = (cs.timestamp + value) & 0xFFFFFFFF
            else:
                cs.timestamp = (cs.timestamp + cs.delta) & 0xFFFFFFFF
        cs.length, cs.type_id, cs.stream_id, cs.extended = length, type_id, stream_id, extended
        cs.payload += buf[pos:pos + take]
        del buf[:pos + take]
        if len(cs.payload) >= length:
            payload = bytes(cs.payload)
            cs.payload.clear()
            self._on_message(cs.type_id, cs.stream_id, cs.timestamp, payload, events)
        return True

    def _maybe_ack(self) -> None:
        if self._peer_window and self._received - self._acked >= self._peer_window:
            self._acked = self._received
            self._send(CSID_CONTROL, ACK, 0, struct.pack("!I", self._received & 0xFFFFFFFF))

    def _send(self, csid: int, type_id: int, stream_id: int, payload: bytes, timestamp: int = 0) -> None:
        self._out += encode_chunks(csid, type_id, stream_id, timestamp, payload, self._out_chunk_size)

    # -- messages (§5.4, §7) -------------------------------------------------------------------

    def _on_message(self, type_id: int, stream_id: int, timestamp: int, payload: bytes,
                    events: list[Event]) -> None:
        if type_id == SET_CHUNK_SIZE:
            size = struct.unpack("!I", payload[:4])[0] & 0x7FFFFFFF
            if size < 1:
                raise RtmpError("chunk size 0")
            self._in_chunk_size = min(size, self.max_message_size)
        elif type_id == ABORT:
            cs = self._streams.get(struct.unpack("!I", payload[:4])[0])
            if cs is not None:
                cs.payload.clear()
        elif type_id == WINDOW_ACK:
            self._peer_window = struct.unpack("!I", payload[:4])[0]
        elif type_id == USER_CONTROL:
            event_type = struct.unpack("!H", payload[:2])[0]
            if event_type == PING_REQUEST:
                self._send(CSID_CONTROL, USER_CONTROL, 0, struct.pack("!H", PING_RESPONSE) + payload[2:6])
        elif type_id in (ACK, SET_PEER_BANDWIDTH, SHARED_OBJECT_AMF0, SHARED_OBJECT_AMF3):
            pass
        elif type_id in (AUDIO, VIDEO):
            if not self.publishing:
                return  # media before publish was accepted is ignored, as servers do
            events.append(Media("audio" if type_id == AUDIO else "video", timestamp, payload))
        elif type_id == AGGREGATE:
            if self.publishing:
                self._on_aggregate(timestamp, payload, events)
        elif type_id in (DATA_AMF0, DATA_AMF3):
            values = amf0.decode_all(payload[1:] if type_id == DATA_AMF3 else payload)
            if values and values[0] == "@setDataFrame":
                values = values[1:]
            if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
                events.append(MetaData(dict(values[1])))
        elif type_id in (COMMAND_AMF0, COMMAND_AMF3):
            self._on_command(amf0.decode_all(payload[1:] if type_id == COMMAND_AMF3 else payload), events)
        else:
            raise RtmpError(f"unknown message type {type_id}")

    def _on_aggregate(self, timestamp: int, payload: bytes, events: list[Event]) -> None:
        """§7.1.6: FLV tags back to back, each followed by its previous-tag-size."""
        pos, base = 0, None
        while pos + 11 <= len(payload):
            tag_type = payload[pos]
            size = int.from_bytes(payload[pos + 1:pos + 4], "big")
            ts = int.from_bytes(payload[pos + 4:pos + 7], "big") | (payload[pos + 7] << 24)
            body = payload[pos + 11:pos + 11 + size]
            if len(body) < size:
                raise RtmpError("truncated aggregate message")
            base = ts if base is None else base
            if tag_type in (AUDIO, VIDEO):
                events.append(Media("audio" if tag_type == AUDIO else "video",
                                    (timestamp + ts - base) & 0xFFFFFFFF, body))
            pos += 11 + size + 4

    def _on_command(self, values: list[Any], events: list[Event]) -> None:
        if len(values) < 2 or not isinstance(values[0], str):
            raise RtmpError("command without a name and transaction id")
        name, txn = values[0], values[1] if isinstance(values[1], float) else 0.0
        args = values[3:]
        if name == "connect":
            params = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
            self.app = str(params.get("app", "")).strip("/")
            self._send(CSID_CONTROL, WINDOW_ACK, 0, struct.pack("!I", WINDOW_ACK_SIZE))
            self._send(CSID_CONTROL, SET_PEER_BANDWIDTH, 0, struct.pack("!IB", WINDOW_ACK_SIZE, 2))
            self._send(CSID_CONTROL, SET_CHUNK_SIZE, 0, struct.pack("!I", self._out_chunk_size))
            self._command("_result", txn, {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                          {"level": "status", "code": "NetConnection.Connect.Success",
                           "description": "Connection succeeded.", "objectEncoding": 0.0})
            events.append(Connected(self.app, str(params.get("tcUrl", "")), params))
        elif name == "createStream":
            self._command("_result", txn, None, float(STREAM_ID))
        elif name in ("releaseStream", "getStreamLength"):
            self._command("_result", txn, None, amf0.UNDEFINED_VALUE)
        elif name == "FCPublish":
            stream = args[0] if args and isinstance(args[0], str) else ""
            self._command("onFCPublish", 0.0, None, {"code": "NetStream.Publish.Start", "description": stream})
        elif name == "publish":
            stream_name = args[0] if args and isinstance(args[0], str) else ""
            publish_type = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
            if self.publishing or self._pending_publish is not None:
                raise RtmpError("publish on a connection that already publishes")
            self._pending_publish = PublishRequested(self.app, stream_name, publish_type)
            events.append(self._pending_publish)
        elif name in ("FCUnpublish", "closeStream", "deleteStream"):
            if self.publishing:
                self.publishing = False
                events.append(Unpublished(name))
        elif name in ("play", "play2", "seek", "pause", "receiveAudio", "receiveVideo"):
            self._status("error", "NetStream.Play.Failed", "this server only accepts publishers")
            self.close_after_send = True
        # other commands (_checkbw, onBWDone replies, ...) need no answer

    def _command(self, name: str, txn: float, *values: Any) -> None:
        self._send(CSID_COMMAND, COMMAND_AMF0, 0, amf0.encode(name, txn, *values))

    def _status(self, level: str, code: str, description: str, details: str = "") -> None:
        info: dict[str, Any] = {"level": level, "code": code, "description": description}
        if details:
            info["details"] = details
        self._send(CSID_STATUS, COMMAND_AMF0, STREAM_ID, amf0.encode("onStatus", 0.0, None, info))
