"""Malformed input on every Twirp route: LiveKit's Twirp errors, never a 500, server stays healthy.

Twirp routing and decoding (reference server-api.md §1.1-1.5): a bad Content-Type or HTTP method
or an unknown method is `bad_route` (404) with meta `twirp_invalid_route`; an undecodable body is
`malformed` (400); a body over `limit.max_api_request_body_size` is a plain-text 413 before
anything else; every Twirp error is JSON with `Content-Type: application/json` exactly.
"""

from __future__ import annotations

import json
import random

import aiohttp
import pytest
from google.protobuf.json_format import ParseDict
from livekit.protocol import agent_dispatch, models
from livekit.protocol import room as proto
from twirp_raw import JSON, PROTOBUF, RPC_NAMES, bearer, healthy, make_token, post, rpc

MAX_BODY = 10 * 1024 * 1024
ALL_GRANTS = {"roomCreate": True, "roomList": True, "roomAdmin": True, "room": "mi-room",
              "destinationRoom": "mi-dest"}
ROUTES = [f"/twirp/livekit.RoomService/{name}" for name in RPC_NAMES]


@pytest.fixture(scope="module")
def url(server) -> str:
    return server.url


@pytest.fixture(scope="module")
def token() -> str:
    return make_token(ALL_GRANTS, ttl=3600)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def assert_twirp(reply, status: int, code: str, msg: str | None = None, meta: dict | None = None) -> dict:
    assert reply.status == status, (reply.status, reply.text)
    body = reply.twirp_error()  # asserts Content-Type: application/json exactly
    assert body["code"] == code, body
    if msg is not None:
        assert body["msg"] == msg, body
    if meta is not None:
        assert body.get("meta") == meta, body
    return body


async def assert_still_serving(session, url: str, token: str) -> None:
    assert await healthy(session, url)
    reply = await rpc(session, url, "CreateRoom", proto.CreateRoomRequest(name="mi-room"), PROTOBUF, bearer(token))
    assert reply.message(models.Room, PROTOBUF).name == "mi-room"
    reply = await rpc(session, url, "ListRooms", proto.ListRoomsRequest(names=["mi-room"]), JSON, bearer(token))
    assert [r["name"] for r in reply.json()["rooms"]] == ["mi-room"]


@pytest.mark.parametrize("route", ROUTES)
async def test_undecodable_bodies_are_malformed(session, url, token, route) -> None:
    h = bearer(token)
    rnd = random.Random(route)
    # protobuf: a length-delimited field cut short; garbage that is no valid wire format
    truncated = proto.CreateRoomRequest(name="n" * 40, metadata="m" * 40).SerializeToString()[:-7]
    for body in (truncated, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0a\x05ab",
                 b"\x0a\x02\xff\xfe",  # field 1 (a string in every request) that is not UTF-8
                 bytes([0x0f]) + rnd.randbytes(20)):  # wire type 7 does not exist
        reply = await post(session, url, route, body, {"Content-Type": PROTOBUF, **h})
        assert_twirp(reply, 400, "malformed", "the request could not be decoded")
    field = {"CreateRoom": "name", "ListRooms": "names"}.get(route.rsplit("/", 1)[1], "room")
    for body in (b"", b"{", b'{"room":', b"{'room': 'x'}", b"nope", b"[]", b'"room"', b"null", b"1", b"true",
                 b'{"a":1}{"b":2}', b"\xff\xfe{}", b'{"%s": 5}' % field.encode(), b'{"%s": {}}' % field.encode(),
                 b"[" * 100_000 + b"]" * 100_000, b'{"x":' * 50_000 + b"1" + b"}" * 50_000):
        reply = await post(session, url, route, body, {"Content-Type": JSON, **h})
        assert_twirp(reply, 400, "malformed", "the json request could not be decoded")
    # the same without a token: decoding comes before the grant check
    reply = await post(session, url, route, b"[]", {"Content-Type": JSON})
    assert_twirp(reply, 400, "malformed")


async def test_wrongly_typed_fields_are_malformed(session, url, token) -> None:
    h = {"Content-Type": JSON, **bearer(token)}
    path = "/twirp/livekit.RoomService/CreateRoom"
    for body in ({"name": 5}, {"name": "x", "emptyTimeout": "abc"}, {"name": "x", "emptyTimeout": -1},
                 {"name": "x", "emptyTimeout": 1.5}, {"name": "x", "maxParticipants": 2**33},
                 {"name": "x", "agents": [None]}, {"name": "x", "agents": {}}, {"name": "x", "egress": []}):
        reply = await post(session, url, path, json.dumps(body).encode(), h)
        assert_twirp(reply, 400, "malformed", "the json request could not be decoded")
    reply = await post(session, url, "/twirp/livekit.RoomService/SendData",
                       json.dumps({"room": "mi-room", "data": "not base64!"}).encode(), h)
    assert_twirp(reply, 400, "malformed")


async def test_empty_bodies(session, url, token) -> None:
    """An empty protobuf body is the empty message; an empty JSON body is malformed; `{}` is empty."""
    h = bearer(token)
    reply = await post(session, url, "/twirp/livekit.RoomService/ListRooms", b"", {"Content-Type": PROTOBUF, **h})
    assert reply.status == 200 and reply.content_type == PROTOBUF
    reply = await post(session, url, "/twirp/livekit.RoomService/ListRooms", b"{}", {"Content-Type": JSON, **h})
    assert reply.status == 200 and "rooms" in reply.json()
    reply = await post(session, url, "/twirp/livekit.RoomService/ListRooms", b" \n ", {"Content-Type": JSON, **h})
    assert_twirp(reply, 400, "malformed")
    # CreateRoom with an empty message: no name
    reply = await post(session, url, "/twirp/livekit.RoomService/CreateRoom", b"", {"Content-Type": PROTOBUF, **h})
    assert_twirp(reply, 400, "invalid_argument")


@pytest.mark.parametrize("route", ROUTES)
async def test_wrong_content_types_are_bad_route(session, url, token, route) -> None:
    h = bearer(token)
    meta = {"twirp_invalid_route": f"POST {route}"}
    for ct in ("text/plain", "application/x-protobuf", "application/grpc", "application/x-www-form-urlencoded",
               "multipart/form-data; boundary=x", "application/jsonx", "json", "application/octet-stream"):
        reply = await post(session, url, route, b"{}", {"Content-Type": ct, **h})
        assert_twirp(reply, 404, "bad_route", f'unexpected Content-Type: "{ct}"', meta)
    # no Content-Type at all (aiohttp would add one for a body: send none)
    reply = await post(session, url, route, None, h)
    assert_twirp(reply, 404, "bad_route", 'unexpected Content-Type: ""', meta)
    # parameters and case are ignored
    for ct in ("application/json; charset=utf-8", "application/json;charset=UTF-8", "Application/JSON",
               " application/json "):
        reply = await post(session, url, route, b"[]", {"Content-Type": ct, **h})
        assert_twirp(reply, 400, "malformed")
    reply = await post(session, url, route, b"\xff\xff", {"Content-Type": "application/protobuf; proto=livekit", **h})
    assert_twirp(reply, 400, "malformed")


@pytest.mark.parametrize("route", ROUTES)
async def test_other_http_methods_are_bad_route(session, url, token, route) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        reply = await post(session, url, route, b"{}", {"Content-Type": JSON, **bearer(token)}, method=method)
        assert_twirp(reply, 404, "bad_route", f'unsupported method "{method}" (only POST is allowed)',
                     {"twirp_invalid_route": f"{method} {route}"})
    reply = await post(session, url, route, None, method="HEAD")
    assert reply.status == 404
    # OPTIONS without a CORS preflight header is an ordinary request too
    reply = await post(session, url, route, None, method="OPTIONS")
    assert_twirp(reply, 404, "bad_route")


async def test_unknown_routes(session, url, token) -> None:
    h = {"Content-Type": JSON, **bearer(token)}
    for path in ("/twirp/livekit.RoomService/NoSuchMethod", "/twirp/livekit.RoomService/createRoom",
                 "/twirp/livekit.RoomService/", "/twirp/livekit.RoomService/CreateRoom/extra",
                 "/twirp/livekit.RoomService/a/CreateRoom"):
        reply = await post(session, url, path, b"{}", h)
        assert_twirp(reply, 404, "bad_route", f'no handler for path "{path}"', {"twirp_invalid_route": f"POST {path}"})
    # the HTTP method is checked before the path, as in twirp's generated servers
    reply = await post(session, url, "/twirp/livekit.RoomService/NoSuchMethod", None, method="GET")
    assert_twirp(reply, 404, "bad_route", 'unsupported method "GET" (only POST is allowed)')
    # services that are not mounted, other prefixes: the mux's plain 404
    for path in ("/twirp/livekit.NoService/Method", "/twirp/other.RoomService/CreateRoom", "/twirp",
                 "/Twirp/livekit.RoomService/CreateRoom", "/twirp2/livekit.RoomService/CreateRoom",
                 "/livekit.RoomService/CreateRoom", "/no/such/path"):
        reply = await post(session, url, path, b"{}", h)
        assert (reply.status, reply.text) == (404, "404 page not found"), path
        assert reply.content_type.startswith("text/plain")


async def test_double_slash_prefix_is_tolerated(session, url, token) -> None:
    """LiveKit's RemoveDoubleSlashes: `//twirp/...` (clients joining host + "/" + "/twirp")."""
    reply = await post(session, url, "//twirp/livekit.RoomService/ListRooms", b"{}",
                       {"Content-Type": JSON, **bearer(token)})
    assert reply.status == 200 and "rooms" in reply.json()
    reply = await post(session, url, "//twirp/livekit.RoomService/Nope", b"{}", {"Content-Type": JSON})
    assert_twirp(reply, 404, "bad_route", 'no handler for path "/twirp/livekit.RoomService/Nope"',
                 {"twirp_invalid_route": "POST /twirp/livekit.RoomService/Nope"})
    assert (await post(session, url, "//", method="GET")).text == "OK"


async def test_bodies_over_the_limit(session, url, token) -> None:
    route = "/twirp/livekit.RoomService/CreateRoom"
    big = b" " * (MAX_BODY + 1)
    for headers in ({"Content-Type": JSON, **bearer(token)}, {"Content-Type": PROTOBUF},
                    {"Content-Type": JSON, **bearer("garbage")}, {"Content-Type": "text/plain"}):
        reply = await post(session, url, route, big, headers)  # with Content-Length
        assert (reply.status, reply.text) == (413, "request body too large"), headers
        assert reply.content_type.startswith("text/plain")

    async def chunks():
        for _ in range(11):
            yield b" " * (1024 * 1024)

    reply = await post(session, url, route, chunks(), {"Content-Type": JSON, **bearer(token)})  # chunked
    assert (reply.status, reply.text) == (413, "request body too large")
    # the limiter runs before routing too, as LiveKit's middleware
    reply = await post(session, url, "/twirp/livekit.RoomService/Nope", big, {"Content-Type": JSON}, method="GET")
    assert reply.status == 413
    # exactly at the limit is read (and here, whitespace only, malformed JSON)
    reply = await post(session, url, route, b" " * MAX_BODY, {"Content-Type": JSON, **bearer(token)})
    assert_twirp(reply, 400, "malformed")
    await assert_still_serving(session, url, token)


async def test_fuzz_never_500(session, url, token, server) -> None:
    """A few hundred random and mutated bodies on random routes: Twirp errors or answers, never a crash."""
    rnd = random.Random(20261123)
    r, who = "mi-room", "someone"
    seeds = {
        "CreateRoom": proto.CreateRoomRequest(name="mi-fuzz", empty_timeout=30, metadata="m", agents=[
            agent_dispatch.RoomAgentDispatch(agent_name="a", metadata="x")]),
        "ListRooms": proto.ListRoomsRequest(names=["mi-room", "mi-fuzz"]),
        "DeleteRoom": proto.DeleteRoomRequest(room="mi-fuzz"),
        "ListParticipants": proto.ListParticipantsRequest(room=r),
        "GetParticipant": proto.RoomParticipantIdentity(room=r, identity=who),
        "RemoveParticipant": proto.RoomParticipantIdentity(room=r, identity=who),
        "MutePublishedTrack": proto.MuteRoomTrackRequest(room=r, identity=who, track_sid="TR_AMabc", muted=True),
        "UpdateParticipant": proto.UpdateParticipantRequest(room=r, identity=who, metadata="m", attributes={"a": "b"},
                                                            permission=models.ParticipantPermission(can_publish=True)),
        "UpdateSubscriptions": proto.UpdateSubscriptionsRequest(room=r, identity=who, track_sids=["TR_x"],
                                                                subscribe=True),
        "SendData": proto.SendDataRequest(room=r, data=b"abc", destination_identities=["x"], topic="t",
                                          kind=models.DataPacket.Kind.RELIABLE),
        "UpdateRoomMetadata": proto.UpdateRoomMetadataRequest(room=r, metadata="fuzzed"),
        "ForwardParticipant": proto.ForwardParticipantRequest(room=r, identity=who, destination_room="mi-dest"),
        "MoveParticipant": proto.MoveParticipantRequest(room=r, identity=who, destination_room="mi-dest"),
        "PerformRpc": proto.PerformRpcRequest(room=r, destination_identity=who, method="m", payload="p",
                                              response_timeout_ms=1000),
    }
    assert set(seeds) == set(RPC_NAMES)
    statuses: dict[int, int] = {}
    for i in range(400):
        name = rnd.choice(RPC_NAMES)
        ct = rnd.choice([PROTOBUF, JSON])
        seed = seeds[name]
        kind = rnd.randrange(6)
        if kind >= 4:  # structure-level: a field of the seed set to a random value of any JSON type
            doc = _to_json(seed)
            key = rnd.choice(sorted(doc) + ["unknownField", "room", "identity"])
            doc[key] = _random_json_value(rnd)
            if ct == JSON:
                body = json.dumps(doc).encode()
            else:
                try:
                    body = ParseDict(doc, type(seed)(), ignore_unknown_fields=True).SerializeToString()
                except Exception:
                    body = seed.SerializeToString()
        else:
            base = seed.SerializeToString() if ct == PROTOBUF else json.dumps(_to_json(seed)).encode()
            if kind == 0:
                body = rnd.randbytes(rnd.randrange(0, 200))
            elif kind == 1:  # bit flips
                b = bytearray(base)
                for _ in range(rnd.randrange(1, 4)):
                    j = rnd.randrange(len(b))
                    b[j] ^= 1 << rnd.randrange(8)
                body = bytes(b)
            elif kind == 2:  # truncation
                body = base[: rnd.randrange(len(base))]
            else:  # splice random bytes in
                j = rnd.randrange(len(base))
                body = base[:j] + rnd.randbytes(rnd.randrange(1, 10)) + base[j:]
        path = f"/twirp/livekit.RoomService/{name}" if rnd.random() < 0.95 else "/twirp/livekit.RoomService/X"
        reply = await post(session, url, path, body, {"Content-Type": ct, **bearer(token)})
        statuses[reply.status] = statuses.get(reply.status, 0) + 1
        where = (i, name, ct, body[:80], reply.status, reply.text[:200])
        if reply.status == 200:
            assert reply.content_type == ct, where
            continue
        err = reply.twirp_error()
        assert err["code"] in ("malformed", "invalid_argument", "not_found", "bad_route", "unavailable",
                               "unauthenticated", "failed_precondition", "internal"), where
        if reply.status >= 500 and reply.status != 503:
            # the one 500 LiveKit itself answers here: CreateRoom asking for egress with none connected
            assert err == {"code": "internal", "msg": "twirp error unknown: egress not connected"}, where
    # plenty were refused by the decoder, and plenty reached the handlers
    assert statuses.get(400, 0) > 50 and sum(n for st, n in statuses.items() if st != 400) > 50, statuses
    await assert_still_serving(session, url, token)
    assert "Traceback" not in server.log_text()


def _random_json_value(rnd: random.Random):
    return rnd.choice([
        None, True, 0, -1, 2**31, 2**63, 1.5, "", "mi-room", "x" * rnd.randrange(300),
        "".join(chr(rnd.randrange(1, 0x2FFFF)) for _ in range(rnd.randrange(20))),
        [], ["a", 1], {}, {"a": "b"}, {"roomName": "x"}, "LOSSY", "RELIABLE", "TR_AMabc",
    ])


def _to_json(msg) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(msg)


async def test_server_still_healthy_after_everything(session, url, token, server) -> None:
    await assert_still_serving(session, url, token)
    assert server.proc.poll() is None
