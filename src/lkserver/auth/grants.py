"""Grants and claims carried in LiveKit access tokens (protocol auth/grants.go).

The dataclasses mirror the official Python SDK (`livekit.api.access_token`) field for field, with
the same defaults, so code written against `livekit.api` works unchanged. `Claims.asdict()`
produces the claim JSON layout LiveKit uses: lowerCamel keys, None and "" left out.
`parse_claims()` is the one reader of a verified token's payload, used by the server and by the
client SDK's TokenVerifier.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from jwt.exceptions import InvalidTokenError
from livekit.protocol.room import RoomConfiguration

_CAMEL_RE = re.compile(r"(?<!^)(?=[A-Z])")


def camel_to_snake(t: str) -> str:
    return _CAMEL_RE.sub("_", t).lower()


def snake_to_lower_camel(t: str) -> str:
    return "".join(word.capitalize() if i else word for i, word in enumerate(t.split("_")))


@dataclass
class VideoGrants:
    # actions on rooms
    room_create: bool | None = None
    room_list: bool | None = None
    room_record: bool | None = None
    # actions on a particular room
    room_admin: bool | None = None
    room_join: bool | None = None
    room: str = ""
    # allows forwarding / moving a participant to this room
    destination_room: str | None = None
    # permissions within a room (absent in a token means allowed)
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    # TrackSource names a participant may publish; when set it supersedes can_publish
    can_publish_sources: list[str] | None = None
    # by default a participant may not update its own metadata
    can_update_own_metadata: bool | None = None
    # actions on ingresses
    ingress_admin: bool | None = None
    # participant is not visible to other participants
    hidden: bool | None = None
    # [deprecated] the participant is a recorder
    recorder: bool | None = None
    # the holder can register as an agent worker
    agent: bool | None = None
    can_manage_agent_session: bool | None = None
    can_subscribe_metrics: bool | None = None


@dataclass
class SIPGrants:
    # manage SIP resources
    admin: bool = False
    # make outbound calls
    call: bool = False


@dataclass
class InferenceGrants:
    perform: bool = False


@dataclass
class ObservabilityGrants:
    write: bool = False


@dataclass
class AgentGrants:
    admin: bool = False
    simulation_admin: bool = False
    database_admin: bool = False
    dispatch_admin: bool = False


@dataclass
class AgentEndpointGrants:
    call: bool = False
    agent_name: str = ""
    deployment: str = ""


@dataclass
class AgentThreadGrants:
    all: bool = False
    scope: str = ""
    thread_ids: list[str] | None = None
    list: bool = False
    create: bool = False
    write: bool = False
    read: bool = False
    delete: bool = False


@dataclass
class Claims:
    identity: str = ""
    name: str = ""
    kind: str = ""
    metadata: str = ""
    video: VideoGrants | None = None
    sip: SIPGrants | None = None
    inference: InferenceGrants | None = None
    observability: ObservabilityGrants | None = None
    agent: AgentGrants | None = None
    agent_endpoint: AgentEndpointGrants | None = None
    agent_thread: AgentThreadGrants | None = None
    attributes: dict[str, str] | None = None
    sha256: str | None = None
    room_preset: str | None = None
    room_config: RoomConfiguration | None = None

    def asdict(self) -> dict[str, Any]:
        """The claim JSON object (minus sub/iss/nbf/exp), in LiveKit's key order and casing.

        Equal to the official SDK's `dataclasses.asdict` with None and "" left out at every
        dataclass level (not inside plain dicts such as `attributes`), `roomConfig` as protojson.
        """
        return _to_json_value(self)


# (attribute, lowerCamel JSON key) per grant class, in field order: computed once at import so
# minting a token does no reflection. Any other dataclass (a user's subclass) takes the
# reflective path, which produces the same layout.
_JSON_KEYS: dict[type, tuple[tuple[str, str], ...]] = {
    cls: tuple((f.name, snake_to_lower_camel(f.name)) for f in dataclasses.fields(cls))
    for cls in (VideoGrants, SIPGrants, InferenceGrants, ObservabilityGrants, AgentGrants,
                AgentEndpointGrants, AgentThreadGrants, Claims)
}
_SCALARS = (str, bool, int, float)


def _to_json_value(value: Any) -> Any:
    if value is None or isinstance(value, _SCALARS):
        return value
    keys = _JSON_KEYS.get(type(value))
    if keys is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        keys = tuple((f.name, snake_to_lower_camel(f.name)) for f in dataclasses.fields(value))
    if keys is not None:
        out: dict[str, Any] = {}
        for attr, key in keys:
            v = getattr(value, attr)
            if v is None or v == "":
                continue
            if attr == "room_config" and isinstance(value, Claims):
                out[key] = MessageToDict(v)
            else:
                out[key] = v if isinstance(v, _SCALARS) else _to_json_value(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json_value(v) for k, v in value.items()}
    return value


# lowerCamel JSON key -> attribute, per grant class; other keys go through camel_to_snake, so a
# snake_case or odd-cased key is read exactly as the official SDK reads it.
_FIELDS_BY_KEY: dict[type, dict[str, str]] = {
    cls: {key: attr for attr, key in keys} for cls, keys in _JSON_KEYS.items()
}

_G = TypeVar("_G")


def _grants_from(raw: Any, cls: type[_G]) -> _G:
    if not isinstance(raw, dict):
        return cls()
    by_key = _FIELDS_BY_KEY[cls]
    fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
    kwargs = {}
    for k, v in raw.items():
        name = by_key.get(k) if isinstance(k, str) else None
        if name is None:
            name = camel_to_snake(str(k))
            if name not in fields:
                continue
        kwargs[name] = v
    return cls(**kwargs)


class RoomConfigError(InvalidTokenError, ValueError, ParseError):
    """A token's `roomConfig` is not a RoomConfiguration.

    An invalid token (`jwt.InvalidTokenError`, like every other rejection), a ValueError (what
    the server maps to 401) and protobuf's ParseError (what the official verifier raises).
    """


def parse_claims(payload: dict[str, Any]) -> Claims:
    """Claims from a verified token payload, as the official TokenVerifier builds them.

    Unknown grant fields are ignored; `video`, `sip`, `inference`, `observability` are always
    present (defaults when absent), `agent*` only when the token has them. Identity is `sub`,
    falling back to `jti` as LiveKit's verifier does.
    """
    get = payload.get
    agent = get("agent")
    agent_endpoint = get("agentEndpoint")
    agent_thread = get("agentThread")
    attributes = get("attributes")
    claims = Claims(
        identity=_str(get("sub")) or _str(get("jti")),
        name=_str(get("name")),
        kind=_str(get("kind")),
        metadata=_str(get("metadata")),
        video=_grants_from(get("video"), VideoGrants),
        sip=_grants_from(get("sip"), SIPGrants),
        inference=_grants_from(get("inference"), InferenceGrants),
        observability=_grants_from(get("observability"), ObservabilityGrants),
        attributes=attributes if isinstance(attributes, dict) else {},
        sha256=_str(get("sha256")),
        agent=None if agent is None else _grants_from(agent, AgentGrants),
        agent_endpoint=None if agent_endpoint is None
        else _grants_from(agent_endpoint, AgentEndpointGrants),
        agent_thread=None if agent_thread is None else _grants_from(agent_thread, AgentThreadGrants),
    )
    room_preset = get("roomPreset")
    if room_preset:
        claims.room_preset = _str(room_preset)
    room_config = get("roomConfig")
    if room_config:
        try:
            claims.room_config = ParseDict(room_config, RoomConfiguration(), ignore_unknown_fields=True)
        except (ParseError, TypeError, ValueError, AttributeError) as e:
            raise RoomConfigError(f"invalid roomConfig in token: {e}") from None
    return claims


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""
