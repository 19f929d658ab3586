"""The OpenAPI 3.0 document of lkserver's REST routes (the tenant gateway and the Analytics API),
served at `GET /openapi.json`. Written as data; tests/gateway runs schemathesis against it, so
what it says is what the server answers (every status, every field).
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from .rest import json_response


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _obj(required: list[str], properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    if description:
        out["description"] = description
    return out


STRING = {"type": "string"}
NAME = {"type": "string", "minLength": 1}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
TIMESTAMP = {"type": "string", "format": "date-time",
             "description": "protobuf Timestamp JSON (RFC 3339, UTC)"}
INT64 = {"type": "string", "pattern": "^[0-9]+$", "description": "an int64, as protojson writes it"}

TENANT_ERRORS = {
    "401": _error("No or invalid tenant credentials while auth is required (codes missing_auth_header, "
                  "invalid_auth_header, unauthorized)"),
    "404": _error("Unknown route, the gateway is off, or a room that does not exist or belongs to "
                  "another tenant (ROOM_NOT_FOUND, the same answer for both), or no such "
                  "participant or track (PARTICIPANT_NOT_FOUND, TRACK_NOT_FOUND)"),
    "405": _error("Method not allowed on this route"),
    "500": _error("The room service itself (or its store) failed (ROOM_SERVICE_FAILED)"),
}
TENANT_SECURITY = [{"tenantBearer": []}, {"tenantApiKey": []}]


def _tenant_op(summary: str, ok: dict[str, Any], extra: dict[str, Any] | None = None,
               body: str | None = None, params: list | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": ["tenant gateway"], "summary": summary, "security": TENANT_SECURITY,
                          "responses": {"200": ok, **TENANT_ERRORS, **(extra or {})}}
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if params:
        op["parameters"] = params
    return op


BAD_BODY = {"400": _error("The body is not a JSON object with the fields the route takes "
                          "(INVALID_REQUEST)")}

PROJECT_ID = {"name": "project_id", "in": "path", "required": True, "schema": NAME,
              "description": "this server's `project_id` (config; default lkserver)"}
ANALYTICS_ERRORS = {
    "401": _error("No or invalid access token"),
    "403": _error("The token lacks the roomList grant"),
    "405": _error("Method not allowed"),
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "lkserver REST API",
        "version": "1",
        "description": "lkserver's REST routes beside LiveKit's Twirp API: the Analytics API as "
                       "LiveKit Cloud serves it (sessions and their participants) and the tenant "
                       "gateway (many tenants share one server; each sees only its own rooms, "
                       "tagged by room metadata `auth_id`). Errors are JSON {error, code}.",
    },
    "paths": {
        "/api/project/{project_id}/sessions": {
            "get": {
                "tags": ["analytics"],
                "summary": "List sessions (room lifetimes), newest first",
                "security": [{"livekitToken": []}],
                "parameters": [
                    PROJECT_ID,
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                    {"name": "page", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "default": 0},
                     "description": "page number, from 0"},
                    {"name": "start", "in": "query", "required": False,
                     "schema": {"type": "string", "format": "date"},
                     "description": "YYYY-MM-DD (UTC), inclusive; within analytics.retention_days "
                                    "(default 7) of today"},
                    {"name": "end", "in": "query", "required": False,
                     "schema": {"type": "string", "format": "date"},
                     "description": "YYYY-MM-DD (UTC), inclusive"},
                ],
                "responses": {
                    "200": _json(_ref("SessionList"), "Sessions"),
                    "400": _error("A bad limit, page, start or end (INVALID_ARGUMENT)"),
                    "404": _error("Unknown project (PROJECT_NOT_FOUND)"),
                    **ANALYTICS_ERRORS,
                },
            },
        },
        "/api/project/{project_id}/sessions/{session_id}": {
            "get": {
                "tags": ["analytics"],
                "summary": "One session with its participants and their participant sessions",
                "security": [{"livekitToken": []}],
                "parameters": [PROJECT_ID, {"name": "session_id", "in": "path", "required": True,
                                            "schema": NAME, "description": "the room sid (RM_...)"}],
                "responses": {
                    "200": _json(_ref("SessionDetails"), "The session"),
                    "404": _error("Unknown project or session (PROJECT_NOT_FOUND, SESSION_NOT_FOUND)"),
                    **ANALYTICS_ERRORS,
                },
            },
        },
        "/livekit/rooms": {
            "get": _tenant_op("The caller's rooms", _json(_ref("RoomList"), "Rooms whose metadata "
                                                           "auth_id is the caller's tenant")),
        },
        "/livekit/rooms/{room_name}": {
            "get": _tenant_op(
                "One of the caller's rooms with its participants",
                _json(_ref("RoomDetails"), "The room"),
                params=[{"name": "room_name", "in": "path", "required": True, "schema": NAME}]),
        },
        "/livekit/token": {
            "post": _tenant_op(
                "Create or open the caller's room and issue a join-only token",
                _json(_ref("TokenResponse"), "A token that may join this room and nothing else"),
                {**BAD_BODY,
                 "403": _error("The name is not the caller's: another tenant's room, a room of no "
                               "tenant, or a name another tenant's unexpired tokens are for "
                               "(ROOM_ACCESS_DENIED)")},
                body="TokenRequest"),
        },
        "/livekit/participant": {
            "delete": _tenant_op(
                "Remove a participant from one of the caller's rooms",
                _json(_ref("RemoveParticipantResponse"), "Removed"), BAD_BODY,
                body="RemoveParticipantRequest"),
        },
        "/livekit/participant/mute": {
            "post": _tenant_op(
                "Mute or unmute a published track in one of the caller's rooms",
                _json(_ref("MuteParticipantResponse"), "The track's muted state"),
                {**BAD_BODY,
                 "409": _error("Unmuting is refused: room.enable_remote_unmute is off "
                               "(FAILED_PRECONDITION)")},
                body="MuteParticipantRequest"),
        },
    },
    "components": {
        "securitySchemes": {
            "livekitToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                             "description": "A LiveKit access token with the roomList grant"},
            "tenantBearer": {"type": "http", "scheme": "bearer",
                             "description": "A tenant secret (gateway.tenants); needed when "
                                            "gateway.auth_required (env AUTH_REQUIRED) is on"},
            "tenantApiKey": {"type": "apiKey", "in": "query", "name": "api_key",
                             "description": "The tenant secret as a query parameter (the header wins)"},
        },
        "schemas": {
            "Error": _obj(["error", "code"], {"error": STRING, "code": STRING}),
            "SessionSummary": _obj(
                ["sessionId", "roomName", "createdAt", "lastActive", "bandwidthIn", "bandwidthOut",
                 "egress", "numParticipants", "numActiveParticipants"],
                {"sessionId": STRING, "roomName": STRING, "createdAt": TIMESTAMP,
                 "lastActive": TIMESTAMP, "endedAt": TIMESTAMP,
                 "bandwidthIn": {**INT64, "description": "bytes participants sent"},
                 "bandwidthOut": {**INT64, "description": "bytes participants received"},
                 "egress": {"type": "integer", "enum": [0, 1, 2],
                            "description": "0 never started, 1 active, 2 ended"},
                 "numParticipants": {"type": "integer", "minimum": 0},
                 "numActiveParticipants": {"type": "integer", "minimum": 0}}),
            "SessionList": _obj(["sessions"], {"sessions": {"type": "array", "items": _ref("SessionSummary")}}),
            "PublishedSources": _obj(
                ["cameraTrack", "microphoneTrack", "screenShareTrack", "screenShareAudio"],
                {"cameraTrack": BOOL, "microphoneTrack": BOOL, "screenShareTrack": BOOL,
                 "screenShareAudio": BOOL}),
            "ParticipantSession": _obj(
                ["sessionId", "participantId", "joinedAt"],
                {"sessionId": STRING, "participantId": STRING, "joinedAt": TIMESTAMP, "leftAt": TIMESTAMP},
                "One connection of a participant (its PA_ sid); a rejoin is a new one"),
            "SessionParticipant": _obj(
                ["participantIdentity", "participantName", "roomId", "joinedAt", "publishedSources",
                 "sessions"],
                {"participantIdentity": STRING, "participantName": STRING, "roomId": STRING,
                 "joinedAt": TIMESTAMP, "leftAt": TIMESTAMP, "publishedSources": _ref("PublishedSources"),
                 "sessions": {"type": "array", "items": _ref("ParticipantSession")}}),
            "SessionDetails": _obj(
                ["roomId", "roomName", "bandwidth", "startTime", "numParticipants", "connectionMinutes",
                 "participants"],
                {"roomId": STRING, "roomName": STRING, "bandwidth": INT64, "startTime": TIMESTAMP,
                 "endTime": TIMESTAMP, "numParticipants": {"type": "integer", "minimum": 0},
                 "connectionMinutes": INT64,
                 "participants": {"type": "array", "items": _ref("SessionParticipant")}}),
            "RoomSummary": _obj(["name", "num_participants", "creation_time"],
                                {"name": STRING, "num_participants": INT, "creation_time": INT}),
            "RoomList": _obj(["rooms"], {"rooms": {"type": "array", "items": _ref("RoomSummary")}}),
            "GatewayParticipant": _obj(
                ["sid", "identity", "name", "state", "kind", "joined_at", "metadata", "attributes",
                 "is_publisher"],
                {"sid": STRING, "identity": STRING, "name": STRING,
                 "state": {"type": "string", "enum": ["JOINING", "JOINED", "ACTIVE", "DISCONNECTED"]},
                 "kind": {"type": "string", "enum": ["STANDARD", "INGRESS", "EGRESS", "SIP", "AGENT",
                                                     "CONNECTOR", "BRIDGE"]},
                 "joined_at": INT, "metadata": STRING,
                 "attributes": {"type": "object", "additionalProperties": STRING},
                 "is_publisher": BOOL}),
            "RoomDetails": _obj(
                ["sid", "name", "num_participants", "max_participants", "creation_time", "metadata",
                 "active_recording", "participants"],
                {"sid": STRING, "name": STRING, "num_participants": INT, "max_participants": INT,
                 "creation_time": INT, "metadata": STRING, "active_recording": BOOL,
                 "participants": {"type": "array", "items": _ref("GatewayParticipant")}}),
            "TokenRequest": _obj(["room_name", "participant_identity"],
                                 {"room_name": NAME, "participant_identity": NAME,
                                  "participant_name": STRING}),
            "TokenResponse": _obj(["token", "room_name", "participant_identity", "livekit_url"],
                                  {"token": STRING, "room_name": STRING, "participant_identity": STRING,
                                   "livekit_url": STRING}),
            "RemoveParticipantRequest": _obj(["room_name", "participant_identity"],
                                             {"room_name": NAME, "participant_identity": NAME}),
            "RemoveParticipantResponse": _obj(
                ["status", "room_name", "participant_identity"],
                {"status": {"type": "string", "enum": ["removed"]}, "room_name": STRING,
                 "participant_identity": STRING}),
            "MuteParticipantRequest": _obj(["room_name", "participant_identity", "track_sid", "muted"],
                                           {"room_name": NAME, "participant_identity": NAME,
                                            "track_sid": NAME, "muted": BOOL}),
            "MuteParticipantResponse": _obj(["room_name", "participant_identity", "track_sid", "muted"],
                                            {"room_name": STRING, "participant_identity": STRING,
                                             "track_sid": STRING, "muted": BOOL}),
        },
    },
}


def document() -> dict[str, Any]:
    """A copy of the document (callers may change theirs)."""
    return copy.deepcopy(DOCUMENT)


async def handle_openapi(request: web.Request) -> web.StreamResponse:
    return json_response(DOCUMENT)


__all__ = ["DOCUMENT", "document", "handle_openapi"]
