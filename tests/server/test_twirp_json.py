"""Twirp's JSON encoding as LiveKit speaks it, protobuf responses, and CORS (server-api.md §1.1-1.4).

Responses: snake_case proto names, every field emitted (zeros, "", [], false), int64 as strings,
enums as names. Requests: camelCase or snake_case keys, enum names or numbers, int64 as strings or
numbers, base64 bytes in any variant, unknown keys ignored. A participant joins through a raw
`/rtc` WebSocket so that participant responses (with their enums) are real.
"""

from __future__ import annotations

import base64
import json

import aiohttp
import pytest
from google.protobuf.json_format import Parse
from livekit.protocol import models
from livekit.protocol import room as proto
from twirp_raw import JSON, OUTPUT, PROTOBUF, bearer, make_token, post, rpc

ROOM = "tj-room"
ADMIN = {"roomAdmin": True, "room": ROOM, "roomCreate": True, "roomList": True}
SERVICE = "/twirp/livekit.RoomService/"


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(scope="module")
def token() -> str:
    return make_token(ADMIN, ttl=3600)


async def call_json(session, url: str, token: str, method: str, body: dict | bytes) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await post(session, url, SERVICE + method, data, {"Content-Type": JSON, **bearer(token)})
    assert reply.content_type == JSON, reply.headers
    return reply.status, reply.json()


def strict_parse(method: str, body: dict):
    """The body as the official message class; fails on any key the class does not have."""
    return Parse(json.dumps(body), OUTPUT[method](), ignore_unknown_fields=False)


def plain_fields(descriptor) -> set[str]:
    """Fields JSON always carries: everything but singular messages and proto3 optionals."""
    out = set()
    for f in descriptor.fields:
        singular_message = f.message_type is not None and not _repeated(f) and not f.message_type.GetOptions().map_entry
        if singular_message or f.has_presence and not _repeated(f) and f.message_type is None:
            continue
        out.add(f.name)
    return out


def _repeated(f) -> bool:
    flag = getattr(f, "is_repeated", None)
    return bool(flag) if flag is not None else f.label == f.LABEL_REPEATED


async def test_room_response_every_field_snake_case(server, session, token) -> None:
    status, room = await call_json(session, server.url, token, "CreateRoom", {"name": ROOM})
    assert status == 200
    assert plain_fields(models.Room.DESCRIPTOR) <= set(room), set(room) ^ plain_fields(models.Room.DESCRIPTOR)
    assert all(k == k.lower() for k in room), "keys are proto (snake_case) names"
    # zero values are there, int64 are strings, uint32 numbers
    assert room["num_participants"] == 0 and room["num_publishers"] == 0 and room["max_participants"] == 0
    assert room["metadata"] == "" and room["active_recording"] is False
    assert isinstance(room["creation_time"], str) and int(room["creation_time"]) > 1_700_000_000
    assert isinstance(room["creation_time_ms"], str) and int(room["creation_time_ms"]) // 1000 >= int(
        room["creation_time"]) - 1
    assert room["empty_timeout"] == 300 and room["departure_timeout"] == 20
    assert room["enabled_codecs"][0] == {"mime": "audio/PCMU", "fmtp_line": ""}
    # unset messages: LiveKit writes null, we leave them out; both read back as unset
    assert room.get("version") is None
    assert strict_parse("CreateRoom", room).sid == room["sid"]


async def test_empty_lists_and_empty_messages(server, session, token) -> None:
    status, body = await call_json(session, server.url, token, "ListRooms", {"names": ["tj-none"]})
    assert (status, body) == (200, {"rooms": []})
    other = make_token({"roomAdmin": True, "room": "tj-none"})
    status, body = await call_json(session, server.url, other, "ListParticipants", {"room": "tj-none"})
    assert (status, body) == (200, {"participants": []})
    await call_json(session, server.url, token, "CreateRoom", {"name": ROOM})
    status, body = await call_json(session, server.url, token, "SendData", {"room": ROOM, "data": "aGk="})
    assert (status, body) == (200, {})
    # protobuf: an empty message is zero bytes
    reply = await rpc(session, server.url, "SendData", proto.SendDataRequest(room=ROOM, data=b"x"), PROTOBUF,
                      bearer(token))
    assert (reply.status, reply.content_type, reply.body) == (200, PROTOBUF, b"")


async def test_protobuf_responses_decode_with_the_official_classes(server, session, token) -> None:
    h = bearer(token)
    reply = await rpc(session, server.url, "CreateRoom", proto.CreateRoomRequest(name=ROOM), PROTOBUF, h)
    room = reply.message(models.Room, PROTOBUF)
    assert room.name == ROOM and room.sid.startswith("RM_")
    reply = await rpc(session, server.url, "ListRooms", proto.ListRoomsRequest(names=[ROOM]), PROTOBUF, h)
    listed = reply.message(proto.ListRoomsResponse, PROTOBUF)
    assert [r.sid for r in listed.rooms] == [room.sid]
    assert listed.rooms[0].creation_time == room.creation_time
    # the JSON and protobuf answers are the same message
    status, body = await call_json(session, server.url, token, "ListRooms", {"names": [ROOM]})
    from_json = strict_parse("ListRooms", body)
    assert from_json.rooms[0].sid == room.sid and from_json.rooms[0].creation_time_ms == room.creation_time_ms


async def test_requests_accept_both_key_spellings_and_ignore_unknown_keys(server, session, token) -> None:
    camel = {"name": "tj-camel", "emptyTimeout": 61, "departureTimeout": 7, "maxParticipants": "3",
             "futureField": {"nested": [1, 2]}, "another": None}
    status, room = await call_json(session, server.url, token, "CreateRoom", camel)
    assert status == 200, room
    assert (room["empty_timeout"], room["departure_timeout"], room["max_participants"]) == (61, 7, 3)
    snake = {"name": "tj-snake", "empty_timeout": 62, "departure_timeout": 8, "max_participants": 4,
             "metadata": None, "unknown_snake": "x"}
    status, room = await call_json(session, server.url, token, "CreateRoom", snake)
    assert status == 200, room
    assert (room["empty_timeout"], room["departure_timeout"], room["max_participants"]) == (62, 8, 4)
    # repeated fields in either spelling; UpdateRoomMetadata names its field `room` in both
    status, body = await call_json(session, server.url, token, "ListRooms", {"names": ["tj-camel", "tj-snake"]})
    assert sorted(r["name"] for r in body["rooms"]) == ["tj-camel", "tj-snake"]


async def test_int64_as_string_or_number_and_bytes_variants(server, session, token) -> None:
    await call_json(session, server.url, token, "CreateRoom", {"name": ROOM})
    # RoomParticipantIdentity.revoke_token_ts is the int64 in RoomService requests
    for ts in ("1700000000", 1700000000, "-5"):
        status, body = await call_json(session, server.url, token, "GetParticipant",
                                       {"room": ROOM, "identity": "ghost", "revokeTokenTs": ts})
        assert (status, body["code"]) == (404, "not_found"), body  # decoded, then not found
    status, body = await call_json(session, server.url, token, "GetParticipant",
                                   {"room": ROOM, "identity": "ghost", "revoke_token_ts": "soon"})
    assert (status, body["code"]) == (400, "malformed")
    # bytes: standard or URL-safe base64, with or without padding
    raw = bytes([0xfb, 0xff, 0xfe, 0x41])
    for data in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
                 base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        status, body = await call_json(session, server.url, token, "SendData", {"room": ROOM, "data": data})
        assert status == 200, (data, body)


async def test_enum_names_and_numbers(server, session, token) -> None:
    await call_json(session, server.url, token, "CreateRoom", {"name": ROOM})
    for kind in ("RELIABLE", "LOSSY", 0, 1, "NOT_A_KIND"):  # unknown names are dropped, as protojson with
        status, body = await call_json(session, server.url, token, "SendData",  # DiscardUnknown
                                       {"room": ROOM, "data": "eA==", "kind": kind})
        assert status == 200, (kind, body)


async def test_participant_json_enums_as_names(server, session, token) -> None:
    """A participant (raw /rtc WebSocket) as ListParticipants/UpdateParticipant show it."""
    join = make_token({"roomJoin": True, "room": ROOM}, sub="tj-alice", name="Alice")
    async with session.ws_connect(f"{server.ws_url}/rtc?access_token={join}&protocol=15") as ws:
        await ws.receive(timeout=10)  # the join response
        status, body = await call_json(session, server.url, token, "ListParticipants", {"room": ROOM})
        assert status == 200
        [p] = body["participants"]
        assert p["identity"] == "tj-alice" and p["name"] == "Alice"
        assert p["state"] in ("JOINING", "JOINED", "ACTIVE") and p["kind"] == "STANDARD"
        assert p["disconnect_reason"] == "UNKNOWN_REASON"
        assert isinstance(p["joined_at"], str) and isinstance(p["joined_at_ms"], str)
        assert p["tracks"] == [] and p["attributes"] == {} and p["is_publisher"] is False
        assert p["permission"]["can_publish_sources"] == []
        assert plain_fields(models.ParticipantInfo.DESCRIPTOR) <= set(p)
        strict_parse("ListParticipants", body)
        # enum names and numbers in a request; names in the response
        status, updated = await call_json(session, server.url, token, "UpdateParticipant", {
            "room": ROOM, "identity": "tj-alice",
            "permission": {"canPublish": True, "canPublishSources": ["CAMERA", 2, "SCREEN_SHARE"]}})
        assert status == 200, updated
        assert updated["permission"]["can_publish_sources"] == ["CAMERA", "MICROPHONE", "SCREEN_SHARE"]
        assert updated["permission"]["can_subscribe"] is False  # the permission set is replaced
        # the same over protobuf decodes with the official class
        reply = await rpc(session, server.url, "GetParticipant",
                          proto.RoomParticipantIdentity(room=ROOM, identity="tj-alice"), PROTOBUF, bearer(token))
        info = reply.message(models.ParticipantInfo, PROTOBUF)
        assert list(info.permission.can_publish_sources) == [models.TrackSource.CAMERA, models.TrackSource.MICROPHONE,
                                                             models.TrackSource.SCREEN_SHARE]
        # a mute of a track that does not exist answers `track: null` (we omit the unset message)
        status, body = await call_json(session, server.url, token, "MutePublishedTrack",
                                       {"room": ROOM, "identity": "tj-alice", "trackSid": "TR_none", "muted": True})
        assert status == 200 and body.get("track") is None, body


async def test_cors(server, session, token) -> None:
    origin = {"Origin": "https://app.example"}
    reply = await post(session, server.url, SERVICE + "ListRooms", b"{}",
                       {"Content-Type": JSON, **bearer(token), **origin})
    assert reply.status == 200 and reply.headers["Access-Control-Allow-Origin"] == "*"
    # errors carry it too: Twirp errors, the auth middleware's 401, the 404 of the mux
    reply = await post(session, server.url, SERVICE + "ListRooms", b"[]", {"Content-Type": JSON, **origin})
    assert reply.status == 400 and reply.headers["Access-Control-Allow-Origin"] == "*"
    reply = await post(session, server.url, SERVICE + "ListRooms", b"{}",
                       {"Content-Type": JSON, "Authorization": "x", **origin})
    assert reply.status == 401 and reply.headers["Access-Control-Allow-Origin"] == "*"
    reply = await post(session, server.url, "/nowhere", b"", origin, method="GET")
    assert reply.status == 404 and reply.headers["Access-Control-Allow-Origin"] == "*"
    # no Origin, no CORS headers
    reply = await post(session, server.url, SERVICE + "ListRooms", b"{}", {"Content-Type": JSON, **bearer(token)})
    assert "Access-Control-Allow-Origin" not in reply.headers
    # preflight: 204, any origin, a day of caching, no auth needed
    reply = await post(session, server.url, SERVICE + "CreateRoom", None, {
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"}, method="OPTIONS")
    assert reply.status == 204, reply.text
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert reply.headers["Access-Control-Max-Age"] == "86400"
    assert "POST" in reply.headers["Access-Control-Allow-Methods"]
    assert reply.headers.get("Access-Control-Allow-Headers")
