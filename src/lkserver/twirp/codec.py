"""Twirp message codec (sans-I/O): request bodies in, response bodies out.

Reproduces what LiveKit's Twirp handlers accept and answer (reference server-api.md §1.3-1.5):
- `application/protobuf`: binary; an empty body is an empty message.
- `application/json`: protojson with unknown fields discarded; snake_case or lowerCamel keys,
  enum names or numbers, int64 as strings or numbers; an empty body is malformed.
- JSON responses use proto field names and emit every field (Twirp's defaults).
- Errors are always JSON `{code, msg, meta}` with `Content-Type: application/json` exactly.
"""

from __future__ import annotations

import functools
import json
from enum import Enum
from typing import TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.message import Message

from .errors import BAD_ROUTE, MALFORMED, TwirpError

M = TypeVar("M", bound=Message)

JSON_CONTENT_TYPE = "application/json"
PROTOBUF_CONTENT_TYPE = "application/protobuf"


class Encoding(Enum):
    JSON = JSON_CONTENT_TYPE
    PROTOBUF = PROTOBUF_CONTENT_TYPE


# what the SDKs send (Python, Go: protobuf; Node: JSON with a charset), recognised in one lookup
_EXACT_CONTENT_TYPES = {
    PROTOBUF_CONTENT_TYPE: Encoding.PROTOBUF,
    JSON_CONTENT_TYPE: Encoding.JSON,
    "application/json;charset=UTF-8": Encoding.JSON,
}


def go_quote(s: str) -> str:
    """A string as Go's %q writes it (Twirp quotes paths, methods and content types this way)."""
    return json.dumps(s, ensure_ascii=False)


def encoding_for(content_type: str | None, invalid_route: str = "") -> Encoding:
    """The encoding named by a Content-Type header; parameters and case are ignored.

    Anything else is Twirp's `bad_route`; `invalid_route` ("POST /twirp/...") becomes its
    `twirp_invalid_route` meta, as twirp's generated servers report it."""
    exact = _EXACT_CONTENT_TYPES.get(content_type)  # type: ignore[arg-type]
    if exact is not None:
        return exact
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base == JSON_CONTENT_TYPE:
        return Encoding.JSON
    if base == PROTOBUF_CONTENT_TYPE:
        return Encoding.PROTOBUF
    meta = {"twirp_invalid_route": invalid_route} if invalid_route else None
    raise TwirpError(BAD_ROUTE, f"unexpected Content-Type: {go_quote(content_type or '')}", meta)


def decode_request(body: bytes, cls: type[M], encoding: Encoding) -> M:
    msg = cls()
    if encoding is Encoding.PROTOBUF:
        try:
            msg.ParseFromString(body)
        except Exception:  # DecodeError, RecursionError on hostile nesting, ...
            raise TwirpError(MALFORMED, "the request could not be decoded") from None
        return msg
    try:
        value = json.loads(body)
        # protojson accepts only an object for a message: `[]`, `"x"` and `null` are malformed
        # (json_format.Parse would read `[]` or `"x"` as an empty message)
        _require_objects(value, msg.DESCRIPTOR)
        ParseDict(value, msg, ignore_unknown_fields=True)
    except Exception:  # ParseError, UnicodeDecodeError, RecursionError, ...
        raise TwirpError(MALFORMED, "the json request could not be decoded") from None
    return msg


def _require_objects(value: object, desc: Descriptor) -> None:
    """Raise ValueError unless every message in `value` is a JSON object (or null inside).

    protojson refuses `[]` or `"x"` where a message belongs; json_format would read them as an
    empty message (a list or a string iterates as a sequence of unknown keys).
    """
    if not isinstance(value, dict):
        raise ValueError("a message must be a JSON object")
    fields = _message_fields(desc)
    for key, item in value.items():
        field = fields.get(key)
        if field is None or item is None:
            continue
        sub = field.message_type
        if sub.GetOptions().map_entry:
            sub = sub.fields_by_name["value"].message_type
            items = item.values() if isinstance(item, dict) else ()
        elif _repeated(field):
            items = item if isinstance(item, list) else ()
        else:
            items = (item,)
        if sub is None or sub.full_name.startswith("google.protobuf."):
            continue  # scalars, and well-known types with their own JSON forms
        for element in items:
            if element is not None or not _repeated(field):
                _require_objects(element, sub)


def _repeated(field: FieldDescriptor) -> bool:
    # protobuf >= 6 has `is_repeated` (and 7 dropped `label`); older releases only `label`
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


@functools.cache
def _message_fields(desc: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields that hold messages, by proto name and by JSON (lowerCamel) name."""
    out: dict[str, FieldDescriptor] = {}
    for f in desc.fields:
        if f.message_type is not None:
            out[f.name] = out[f.json_name] = f
    return out


def message_to_json_dict(msg: Message) -> dict:
    """A message as Twirp's JSON response: proto field names, every field emitted."""
    return MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def encode_response(msg: Message, encoding: Encoding) -> bytes:
    if encoding is Encoding.PROTOBUF:
        return msg.SerializeToString()
    return json.dumps(message_to_json_dict(msg), separators=(",", ":")).encode()


def encode_error(err: TwirpError) -> bytes:
    body: dict = {"code": err.code, "msg": err.msg}
    if err.meta:
        body["meta"] = err.meta
    return json.dumps(body, separators=(",", ":")).encode()
