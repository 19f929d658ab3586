"""AMF0 (Adobe Action Message Format 0), as RTMP commands and FLV metadata carry it (sans-I/O).

Encodes and decodes the types RTMP peers exchange: number, boolean, string, object, null,
undefined, ECMA array, strict array, date and long string. Decoding is bounded: nesting depth and
the number of values are limited so a hostile payload cannot exhaust memory or the stack; any
malformed input raises `AmfError`.
"""

from __future__ import annotations

import struct
from typing import Any

NUMBER, BOOLEAN, STRING, OBJECT, NULL, UNDEFINED = 0x00, 0x01, 0x02, 0x03, 0x05, 0x06
ECMA_ARRAY, OBJECT_END, STRICT_ARRAY, DATE, LONG_STRING = 0x08, 0x09, 0x0A, 0x0B, 0x0C

MAX_DEPTH = 16
MAX_VALUES = 4096

_F64 = struct.Struct("!d")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class AmfError(ValueError):
    """The bytes are not valid AMF0 (or exceed the decoder's bounds)."""


class EcmaArray(dict):
    """A mapping that encodes as an AMF0 ECMA array (onMetaData uses one) instead of an object."""


class Undefined:
    def __repr__(self) -> str:
        return "undefined"


UNDEFINED_VALUE = Undefined()


def encode(*values: Any) -> bytes:
    out = bytearray()
    for v in values:
        _encode(out, v)
    return bytes(out)


def _encode_key(out: bytearray, key: str) -> None:
    raw = key.encode("utf-8")
    out += _U16.pack(len(raw)) + raw


def _encode(out: bytearray, v: Any) -> None:
    if v is None:
        out.append(NULL)
    elif v is UNDEFINED_VALUE:
        out.append(UNDEFINED)
    elif isinstance(v, bool):
        out += bytes((BOOLEAN, 1 if v else 0))
    elif isinstance(v, (int, float)):
        out.append(NUMBER)
        out += _F64.pack(float(v))
    elif isinstance(v, str):
        raw = v.encode("utf-8")
        if len(raw) > 0xFFFF:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw)) + raw
        else:
            out.append(STRING)
            out += _U16.pack(len(raw)) + raw
    elif isinstance(v, EcmaArray):
        out.append(ECMA_ARRAY)
        out += _U32.pack(len(v))
        for k, item in v.items():
            _encode_key(out, str(k))
            _encode(out, item)
        out += b"\x00\x00" + bytes((OBJECT_END,))
    elif isinstance(v, dict):
        out.append(OBJECT)
        for k, item in v.items():
            _encode_key(out, str(k))
            _encode(out, item)
        out += b"\x00\x00" + bytes((OBJECT_END,))
    elif isinstance(v, (list, tuple)):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(v))
        for item in v:
            _encode(out, item)
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as AMF0")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.count = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise AmfError("truncated AMF0 value")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def string(self, long: bool = False) -> str:
        n = _U32.unpack(self.take(4))[0] if long else _U16.unpack(self.take(2))[0]
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise AmfError("AMF0 string is not UTF-8") from None

    def value(self, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise AmfError("AMF0 values nested too deeply")
        self.count += 1
        if self.count > MAX_VALUES:
            raise AmfError("too many AMF0 values")
        marker = self.byte()
        if marker == NUMBER:
            return _F64.unpack(self.take(8))[0]
        if marker == BOOLEAN:
            return self.byte() != 0
        if marker == STRING:
            return self.string()
        if marker == LONG_STRING:
            return self.string(long=True)
        if marker == NULL:
            return None
        if marker == UNDEFINED:
            return UNDEFINED_VALUE
        if marker == OBJECT:
            return self.properties({}, depth)
        if marker == ECMA_ARRAY:
            self.take(4)  # the count is a hint; the end marker decides
            return self.properties(EcmaArray(), depth)
        if marker == STRICT_ARRAY:
            n = _U32.unpack(self.take(4))[0]
            if n > MAX_VALUES:
                raise AmfError("AMF0 array too long")
            return [self.value(depth + 1) for _ in range(n)]
        if marker == DATE:
            ms = _F64.unpack(self.take(8))[0]
            self.take(2)  # time zone, unused
            return ms
        raise AmfError(f"unsupported AMF0 marker 0x{marker:02x}")

    def properties(self, out: dict, depth: int) -> dict:
        while True:
            key = self.string()
            if not key:
                if self.pos < len(self.data) and self.data[self.pos] == OBJECT_END:
                    self.pos += 1
                    return out
                if self.pos >= len(self.data):
                    return out  # some encoders end an ECMA array without the marker
            out[key] = self.value(depth + 1)


def decode_all(data: bytes) -> list[Any]:
    """Every AMF0 value in `data`, in order."""
    r = _Reader(data)
    values = []
    while r.pos < len(data):
        values.append(r.value())
    return values
