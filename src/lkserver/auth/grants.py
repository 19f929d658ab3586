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
from typing import Any, Optional, Type, TypeVar

from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from livekit.protocol.room import RoomConfiguration

_CAMEL_RE = re.compile(r"(?<!^)(?=[A-Z])")


def camel_to_snake(t: str) -> str:
    return _CAMEL_RE.sub("_", t).lower()


def snake_to_lower_camel(t: str) -> str:
    return "".join(word.capitalize() if i else word for i, word in enumerate(t.split("_")))


@dataclass
class VideoGrants:
    # actions on rooms
    room_create: Optional[bool] = None
    room_list: Optional[bool] = None
    room_record: Optional[bool] = None
    # actions on a particular room
    room_admin: Optional[bool] = None
    room_join: Optional[bool] = None
    room: str = ""
    # allows forwarding / moving a participant to this room
    destination_room: Optional[str] = None
    # permissions within a room (absent in a token means allowed)
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    # TrackSource names a participant may publish; when set it supersedes can_publish
    can_publish_sources: Optional[list[str]] = None
    # by default a participant may not update its own metadata
    can_update_own_metadata: Optional[bool] = None
    # actions on ingresses
    ingress_admin: Optional[bool] = None
    # participant is not visible to other participants
    hidden: Optional[bool] = None
    # [deprecated] the participant is a recorder
    recorder: Optional[bool] = None
    # the holder can register as an agent worker
    agent: Optional[bool] = None
    can_manage_agent_session: Optional[bool] = None
    can_subscribe_metrics: Optional[bool] = None


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
    thread_ids: Optional[list[str]] = None
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
    video: Optional[VideoGrants] = None
    sip: Optional[SIPGrants] = None
    inference: Optional[InferenceGrants] = None
    observability: Optional[ObservabilityGrants] = None
    agent: Optional[AgentGrants] = None
    agent_endpoint: Optional[AgentEndpointGrants] = None
    agent_thread: Optional[AgentThreadGrants] = None
    attributes: Optional[dict[str, str]] = None
    sha256: Optional[str] = None
    room_preset: Optional[str] = None
    room_config: Optional[RoomConfiguration] = None

    def asdict(self) -> dict[str, Any]:
        """The claim JSON object (minus sub/iss/nbf/exp), in LiveKit's key order and casing."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value == "":
                continue
            if f.name == "room_config":
                continue
            out[snake_to_lower_camel(f.name)] = _to_json_value(value)
        if self.room_config:
            out["roomConfig"] = MessageToDict(self.room_config)
        return out


def _to_json_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            snake_to_lower_camel(f.name): _to_json_value(v)
            for f in dataclasses.fields(value)
            if (v := getattr(value, f.name)) is not None and v != ""
        }
    if isinstance(value, list):
        return [_to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json_value(v) for k, v in value.items()}
    return value


_G = TypeVar("_G")


def _grants_from(raw: Any, cls: Type[_G]) -> _G:
    if not isinstance(raw, dict):
        return cls()
    fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
    kwargs = {}
    for k, v in raw.items():
        name = camel_to_snake(str(k))
        if name in fields:
            kwargs[name] = v
    return cls(**kwargs)


def parse_claims(payload: dict[str, Any]) -> Claims:
    """Claims from a verified token payload; unknown grant fields are ignored."""
    claims = Claims(
        identity=_str(payload.get("sub")) or _str(payload.get("jti")),
        name=_str(payload.get("name")),
        kind=_str(payload.get("kind")),
        metadata=_str(payload.get("metadata")),
        video=_grants_from(payload.get("video", {}), VideoGrants),
        sip=_grants_from(payload.get("sip", {}), SIPGrants),
        inference=_grants_from(payload.get("inference", {}), InferenceGrants),
        observability=_grants_from(payload.get("observability", {}), ObservabilityGrants),
        attributes=payload.get("attributes") if isinstance(payload.get("attributes"), dict) else {},
        sha256=_str(payload.get("sha256")),
        agent=_grants_from(payload["agent"], AgentGrants) if "agent" in payload else None,
        agent_endpoint=_grants_from(payload["agentEndpoint"], AgentEndpointGrants)
        if "agentEndpoint" in payload else None,
        agent_thread=_grants_from(payload["agentThread"], AgentThreadGrants)
        if "agentThread" in payload else None,
    )
    if payload.get("roomPreset"):
        claims.room_preset = _str(payload.get("roomPreset"))
    room_config = payload.get("roomConfig")
    if room_config:
        try:
            claims.room_config = ParseDict(room_config, RoomConfiguration(), ignore_unknown_fields=True)
        except (ParseError, TypeError, ValueError) as e:
            raise ValueError(f"invalid roomConfig in token: {e}") from None
    return claims


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""
