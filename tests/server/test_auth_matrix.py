"""Auth matrix: every RoomService RPC x every bad credential, in both encodings (server-api.md §2).

Bad tokens are refused by the auth middleware with a plain-text 401 and LiveKit's message; valid
tokens without the RPC's grant get Twirp `unauthenticated` "permissions denied". No combination
gets through: the denied calls target real state, which is checked unchanged at the end. Positive
controls (the exact grant, within-leeway times, `access_token=`) prove the same requests pass.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import API_KEY, API_SECRET
from livekit.protocol import room as proto
from twirp_raw import JSON, OUTPUT, PROTOBUF, RPC_NAMES, bearer, make_token, post, rpc

ROOM = "am-room"
OTHER = "am-other"
DEST = "am-dest"
ENCODINGS = [PROTOBUF, JSON]

# the grant LiveKit requires per RPC (§2.6)
GRANT = {
    "CreateRoom": "create", "DeleteRoom": "create", "ListRooms": "list",
    "ForwardParticipant": "dest", "MoveParticipant": "dest",
}
for _name in RPC_NAMES:
    GRANT.setdefault(_name, "admin")

# one request per RPC, aimed at real state so that a leak would show
DENIED_REQUEST: dict[str, Any] = {
    "CreateRoom": proto.CreateRoomRequest(name="am-denied", metadata="leak"),
    "ListRooms": proto.ListRoomsRequest(),
    "DeleteRoom": proto.DeleteRoomRequest(room=ROOM),
    "ListParticipants": proto.ListParticipantsRequest(room=ROOM),
    "GetParticipant": proto.RoomParticipantIdentity(room=ROOM, identity="ghost"),
    "RemoveParticipant": proto.RoomParticipantIdentity(room=ROOM, identity="ghost"),
    "MutePublishedTrack": proto.MuteRoomTrackRequest(room=ROOM, identity="ghost", track_sid="TR_x", muted=True),
    "UpdateParticipant": proto.UpdateParticipantRequest(room=ROOM, identity="ghost", metadata="leak"),
    "UpdateSubscriptions": proto.UpdateSubscriptionsRequest(room=ROOM, identity="ghost", track_sids=["TR_x"],
                                                             subscribe=True),
    "SendData": proto.SendDataRequest(room=ROOM, data=b"leak", topic="t"),
    "UpdateRoomMetadata": proto.UpdateRoomMetadataRequest(room=ROOM, metadata="leak"),
    "ForwardParticipant": proto.ForwardParticipantRequest(room=ROOM, identity="ghost", destination_room=DEST),
    "MoveParticipant": proto.MoveParticipantRequest(room=ROOM, identity="ghost", destination_room=DEST),
    "PerformRpc": proto.PerformRpcRequest(room=ROOM, destination_identity="ghost", method="m", payload="p"),
}
assert set(DENIED_REQUEST) == set(RPC_NAMES)

# with the right grant: (request, status, twirp code or None for 200); harmless to the checked state
CONTROL: dict[str, tuple[Any, int, str | None]] = {
    "CreateRoom": (proto.CreateRoomRequest(name="am-control"), 200, None),
    "ListRooms": (proto.ListRoomsRequest(), 200, None),
    "DeleteRoom": (proto.DeleteRoomRequest(room="am-absent"), 404, "not_found"),
    "ListParticipants": (DENIED_REQUEST["ListParticipants"], 200, None),
    "GetParticipant": (DENIED_REQUEST["GetParticipant"], 404, "not_found"),
    "RemoveParticipant": (DENIED_REQUEST["RemoveParticipant"], 404, "not_found"),
    "MutePublishedTrack": (DENIED_REQUEST["MutePublishedTrack"], 503, "unavailable"),
    "UpdateParticipant": (DENIED_REQUEST["UpdateParticipant"], 404, "not_found"),
    "UpdateSubscriptions": (DENIED_REQUEST["UpdateSubscriptions"], 503, "unavailable"),
    "SendData": (DENIED_REQUEST["SendData"], 200, None),
    "UpdateRoomMetadata": (proto.UpdateRoomMetadataRequest(room=ROOM, metadata="original"), 200, None),
    "ForwardParticipant": (DENIED_REQUEST["ForwardParticipant"], 503, "unavailable"),
    "MoveParticipant": (DENIED_REQUEST["MoveParticipant"], 503, "unavailable"),
    "PerformRpc": (DENIED_REQUEST["PerformRpc"], 503, "unavailable"),
}

ALL_GRANTS = {"roomCreate": True, "roomList": True, "roomRecord": True, "roomAdmin": True, "roomJoin": True,
              "room": ROOM, "destinationRoom": DEST, "ingressAdmin": True}
EXACT_GRANT = {
    "create": {"roomCreate": True},
    "list": {"roomList": True},
    "admin": {"roomAdmin": True, "room": ROOM},
    "dest": {"roomAdmin": True, "room": ROOM, "destinationRoom": DEST},
}
WITHOUT = {"create": ["roomCreate"], "list": ["roomList"], "admin": ["roomAdmin"], "dest": ["destinationRoom"]}


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned_token(alg: str = "none") -> str:
    now = int(time.time())
    payload = {"iss": API_KEY, "sub": "", "nbf": now, "exp": now + 600, "video": ALL_GRANTS}
    return f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(payload)}."


def token_without_exp() -> str:
    import jwt

    return jwt.encode({"iss": API_KEY, "sub": "", "nbf": int(time.time()), "video": ALL_GRANTS},
                      API_SECRET, algorithm="HS256")


def hs256_header_alg_none() -> str:
    """A valid HS256 signature under a header that says `none`: still refused."""
    import hashlib
    import hmac

    now = int(time.time())
    signing_input = (f"{_b64({'alg': 'none', 'typ': 'JWT'})}."
                     f"{_b64({'iss': API_KEY, 'nbf': now, 'exp': now + 600, 'video': ALL_GRANTS})}")
    sig = hmac.new(API_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


# -- the cases: (headers for an RPC, expected rejection) ----------------------------------------------

PLAIN = "plain"  # plain-text 401 from the auth middleware
DENIED = "denied"  # Twirp unauthenticated "permissions denied"

HeaderFn = Callable[[str], dict[str, str]]
CASES: dict[str, tuple[HeaderFn, str, str]] = {
    # name: (headers(rpc), kind, expected message or prefix ending in ": ")
    "no_token": (lambda rpc: {}, DENIED, "permissions denied"),
    "malformed_token": (lambda rpc: bearer("not-a-jwt"), PLAIN, "invalid authorization token"),
    "malformed_token_segments": (lambda rpc: bearer("a.b.c"), PLAIN, "invalid authorization token"),
    "not_bearer": (lambda rpc: {"Authorization": make_token(ALL_GRANTS)}, PLAIN,
                   "invalid authorization header. Must start with Bearer "),
    "lowercase_bearer": (lambda rpc: {"Authorization": "bearer " + make_token(ALL_GRANTS)}, PLAIN,
                         "invalid authorization header. Must start with Bearer "),
    "basic_auth": (lambda rpc: {"Authorization": "Basic ZGV2a2V5OnNlY3JldA=="}, PLAIN,
                   "invalid authorization header. Must start with Bearer "),
    "wrong_secret": (lambda rpc: bearer(make_token(ALL_GRANTS, secret="not-the-secret")), PLAIN,
                     "invalid authorization token: "),
    "unknown_key": (lambda rpc: bearer(make_token(ALL_GRANTS, key="APIunknown")), PLAIN, "invalid API key"),
    "expired": (lambda rpc: bearer(make_token(ALL_GRANTS, ttl=-120, nbf=int(time.time()) - 600)), PLAIN,
                "invalid authorization token: "),
    "not_yet_valid": (lambda rpc: bearer(make_token(ALL_GRANTS, nbf=int(time.time()) + 300)), PLAIN,
                      "invalid authorization token: "),
    "without_exp": (lambda rpc: bearer(token_without_exp()), PLAIN, "invalid authorization token: "),
    "alg_none": (lambda rpc: bearer(unsigned_token("none")), PLAIN, "invalid authorization token"),
    "alg_none_signed": (lambda rpc: bearer(hs256_header_alg_none()), PLAIN, "invalid authorization token"),
    "alg_hs512": (lambda rpc: bearer(make_token(ALL_GRANTS, algorithm="HS512")), PLAIN,
                  "invalid authorization token"),
    "missing_grant": (lambda rpc: bearer(make_token(
        {k: v for k, v in ALL_GRANTS.items() if k not in WITHOUT[GRANT[rpc]]})), DENIED, "permissions denied"),
    "no_video_grant": (lambda rpc: bearer(make_token(None)), DENIED, "permissions denied"),
    "dest_without_admin": (lambda rpc: bearer(make_token(
        {k: v for k, v in ALL_GRANTS.items() if k not in ("roomAdmin", "roomCreate", "roomList")})),
        DENIED, "permissions denied"),
    "admin_other_room": (lambda rpc: bearer(make_token({"roomAdmin": True, "room": OTHER, "destinationRoom": DEST})),
                         DENIED, "permissions denied"),
    "admin_empty_room": (lambda rpc: bearer(make_token({"roomAdmin": True, "destinationRoom": DEST})),
                         DENIED, "permissions denied"),
    "admin_room_case": (lambda rpc: bearer(make_token({"roomAdmin": True, "room": ROOM.upper(),
                                                        "destinationRoom": DEST})), DENIED, "permissions denied"),
}


@pytest.fixture(scope="module")
def url(server) -> str:
    return server.url


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(scope="module", autouse=True)
def seeded_room(server):
    """The room the denied calls aim at, created with a proper token."""
    import asyncio

    async def seed() -> None:
        async with aiohttp.ClientSession() as s:
            h = bearer(make_token({"roomCreate": True}))
            r = await rpc(s, server.url, "CreateRoom", proto.CreateRoomRequest(name=ROOM, metadata="original"),
                          PROTOBUF, h)
            assert r.status == 200, r.text

    asyncio.run(seed())


def assert_rejected(reply, kind: str, expected: str, where: str) -> None:
    assert reply.status == 401, (where, reply.status, reply.text)
    if kind == PLAIN:
        assert reply.content_type.startswith("text/plain"), (where, reply.content_type)
        if expected.endswith(": "):
            assert reply.text.startswith(expected) and len(reply.text) > len(expected), (where, reply.text)
        else:
            assert reply.text == expected, (where, reply.text)
    else:
        assert reply.twirp_error() == {"code": "unauthenticated", "msg": expected}, where


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", RPC_NAMES)
async def test_rejected(session, url, name: str, case: str) -> None:
    headers_fn, kind, expected = CASES[case]
    for ct in ENCODINGS:
        reply = await rpc(session, url, name, DENIED_REQUEST[name], ct, headers_fn(name))
        assert_rejected(reply, kind, expected, f"{name} {case} {ct}")


@pytest.mark.parametrize("name", RPC_NAMES)
async def test_exact_grant_passes_auth(session, url, name: str) -> None:
    req, status, code = CONTROL[name]
    token = make_token(EXACT_GRANT[GRANT[name]])
    for ct in ENCODINGS:
        reply = await rpc(session, url, name, req, ct, bearer(token))
        assert reply.status == status, (name, ct, reply.status, reply.text)
        if code is None:
            reply.message(OUTPUT[name], ct)
        else:
            assert reply.twirp_error()["code"] == code


async def test_access_token_query_parameter(session, url) -> None:
    good = make_token({"roomList": True})
    reply = await rpc(session, url, "ListRooms", proto.ListRoomsRequest(), PROTOBUF, query=f"?access_token={good}")
    assert ROOM in {r.name for r in reply.message(proto.ListRoomsResponse, PROTOBUF).rooms}
    # a bad one is refused like a bad header
    bad = make_token({"roomList": True}, secret="wrong")
    reply = await rpc(session, url, "ListRooms", proto.ListRoomsRequest(), JSON, query=f"?access_token={bad}")
    assert reply.status == 401 and reply.text.startswith("invalid authorization token: ")
    # the query grants are checked like any others
    weak = make_token({"roomJoin": True, "room": ROOM})
    reply = await rpc(session, url, "ListRooms", proto.ListRoomsRequest(), JSON, query=f"?access_token={weak}")
    assert reply.twirp_error() == {"code": "unauthenticated", "msg": "permissions denied"}
    # an Authorization header wins over the query parameter (LiveKit reads the form only without one)
    reply = await rpc(session, url, "ListRooms", proto.ListRoomsRequest(), JSON, headers={"Authorization": "xyz"},
                      query=f"?access_token={good}")
    assert reply.status == 401 and reply.text == "invalid authorization header. Must start with Bearer "


async def test_leeway_accepts_slightly_expired_and_early_tokens(session, url) -> None:
    now = int(time.time())
    for token in (make_token({"roomList": True}, ttl=-30, nbf=now - 600),     # expired 30 s ago
                  make_token({"roomList": True}, nbf=now + 30)):              # valid in 30 s
        for ct in ENCODINGS:
            reply = await rpc(session, url, "ListRooms", proto.ListRoomsRequest(), ct, bearer(token))
            assert reply.status == 200, reply.text


async def test_header_name_is_case_insensitive_and_empty_header_is_absent(session, url) -> None:
    good = make_token({"roomList": True})
    reply = await rpc(session, url, "ListRooms", proto.ListRoomsRequest(), PROTOBUF,
                      {"authorization": "Bearer " + good})
    assert reply.status == 200
    # Go's Header.Get returns "" for an empty header: no token, so the grant check answers
    reply = await rpc(session, url, "ListRooms", proto.ListRoomsRequest(), JSON, {"Authorization": ""})
    assert reply.twirp_error() == {"code": "unauthenticated", "msg": "permissions denied"}


async def test_health_check_runs_the_auth_middleware(session, url) -> None:
    reply = await post(session, url, "/", method="GET", headers={"Authorization": "Token x"})
    assert (reply.status, reply.text) == (401, "invalid authorization header. Must start with Bearer ")
    reply = await post(session, url, "/", method="GET", headers=bearer("garbage"))
    assert (reply.status, reply.text) == (401, "invalid authorization token")
    reply = await post(session, url, "/", method="GET")
    assert (reply.status, reply.text) == (200, "OK")


async def test_bad_tokens_are_refused_before_routing(session, url) -> None:
    """The middleware runs before the Twirp router: even a bad route answers 401 to a bad token."""
    reply = await post(session, url, "/twirp/livekit.RoomService/NoSuchMethod", b"{}",
                       {"Content-Type": JSON, **bearer("garbage")})
    assert (reply.status, reply.text) == (401, "invalid authorization token")
    # without a token the router answers first
    reply = await post(session, url, "/twirp/livekit.RoomService/NoSuchMethod", b"{}", {"Content-Type": JSON})
    assert reply.twirp_error()["code"] == "bad_route"


def test_zz_nothing_got_through(server) -> None:
    """Last in the module: the denied calls left the state alone."""
    import asyncio

    async def check() -> None:
        async with aiohttp.ClientSession() as s:
            h = bearer(make_token({"roomList": True}))
            r = await rpc(s, server.url, "ListRooms", proto.ListRoomsRequest(), PROTOBUF, h)
            rooms = {room.name: room for room in r.message(proto.ListRoomsResponse, PROTOBUF).rooms}
        assert "am-denied" not in rooms
        assert ROOM in rooms and rooms[ROOM].metadata == "original"

    asyncio.run(check())
