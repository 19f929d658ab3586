"""The tenant gateway on a real server: auth, isolation, join-only tokens, JSON errors.

Every answer is checked as a tenant's client would read it; the server's own API (server keys)
is the independent observer of what really happened to rooms and participants.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from urllib.parse import quote

import aiohttp
import pytest
from conftest import API_KEY, API_SECRET, ServerProcess, free_port
from gwfix import SERVER_ARGS, TENANTS, admin, call, claims_of, gateway_config, join
from livekit import api

from lkserver.config import ConfigError, load_config


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("gw"), *SERVER_ARGS, config=gateway_config()).start()
    yield s
    s.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def test_credentials(gw, http) -> None:
    url = f"{gw.url}/livekit/rooms"
    assert await call(http, "GET", url) == (401, {
        "error": "missing credentials: send Authorization: Bearer <token> or ?api_key=<token>",
        "code": "missing_auth_header"})
    status, body = await call(http, "GET", url, headers={"Authorization": f"Basic {TENANTS['acme']}"})
    assert (status, body["code"]) == (401, "invalid_auth_header")
    status, body = await call(http, "GET", url, headers={"Authorization": "Bearer not-a-secret"})
    assert (status, body) == (401, {"error": "invalid token", "code": "unauthorized"})
    status, body = await call(http, "GET", f"{url}?api_key=wrong")
    assert (status, body["code"]) == (401, "unauthorized")
    # a LiveKit access token is not a tenant credential
    lk_token = api.AccessToken(API_KEY, API_SECRET).with_grants(api.VideoGrants(room_list=True)).to_jwt()
    assert (await call(http, "GET", url, headers={"Authorization": f"Bearer {lk_token}"}))[0] == 401

    assert (await call(http, "POST", f"{gw.url}/livekit/token", "acme",
                       {"room_name": "cred-room", "participant_identity": "a"}))[0] == 200
    status, body = await call(http, "GET", f"{url}?api_key={TENANTS['acme']}")
    assert status == 200 and "cred-room" in [r["name"] for r in body["rooms"]]
    # the header wins over ?api_key=
    status, body = await call(http, "GET", f"{url}?api_key={TENANTS['acme']}", "globex")
    assert status == 200 and "cred-room" not in [r["name"] for r in body["rooms"]]


async def test_tokens_join_one_room_and_nothing_else(gw, http) -> None:
    before = time.time()
    status, body = await call(http, "POST", f"{gw.url}/livekit/token", "acme",
                              {"room_name": "tok-room", "participant_identity": "alice",
                               "participant_name": "Alice"})
    assert status == 200, body
    assert body["room_name"] == "tok-room" and body["participant_identity"] == "alice"
    assert body["livekit_url"] == gw.ws_url
    claims = claims_of(body["token"])
    assert (claims.identity, claims.name) == ("alice", "Alice")
    v = claims.video
    assert v.room_join is True and v.room == "tok-room"
    assert not any((v.room_list, v.room_create, v.room_record, v.room_admin, v.ingress_admin,
                    v.can_update_own_metadata, v.hidden, v.recorder, v.agent, v.destination_room))
    assert (v.can_publish, v.can_subscribe, v.can_publish_data) == (True, True, True)
    import jwt

    raw = jwt.decode(body["token"], options={"verify_signature": False})
    assert raw["exp"] - raw["nbf"] == 900 and raw["nbf"] >= int(before) - 1
    assert "sip" not in raw or not any(raw["sip"].values())
    # the token cannot use the RoomService: no other tenant's room can be listed or touched
    for rpc, req in (("ListRooms", api.ListRoomsRequest()),
                     ("CreateRoom", api.CreateRoomRequest(name="sneaky")),
                     ("ListParticipants", api.ListParticipantsRequest(room="tok-room"))):
        async with http.post(f"{gw.url}/twirp/livekit.RoomService/{rpc}", data=req.SerializeToString(),
                             headers={"Authorization": f"Bearer {body['token']}",
                                      "Content-Type": "application/protobuf"}) as resp:
            assert resp.status == 401, (rpc, resp.status)
            assert (await resp.json())["msg"] == "permissions denied"
    async with admin(gw) as lk:
        [room] = (await lk.room.list_rooms(api.ListRoomsRequest(names=["tok-room"]))).rooms
        assert json.loads(room.metadata) == {"auth_id": "acme"}
        assert not (await lk.room.list_rooms(api.ListRoomsRequest(names=["sneaky"]))).rooms
    # the same tenant gets another token for its room; the room is not recreated
    status, again = await call(http, "POST", f"{gw.url}/livekit/token", "acme",
                               {"room_name": "tok-room", "participant_identity": "bob"})
    assert status == 200 and claims_of(again["token"]).identity == "bob"
    async with admin(gw) as lk:
        [same] = (await lk.room.list_rooms(api.ListRoomsRequest(names=["tok-room"]))).rooms
        assert same.sid == room.sid


async def test_another_tenants_room_is_invisible(gw, http) -> None:
    base = f"{gw.url}/livekit"
    assert (await call(http, "POST", f"{base}/token", "acme",
                       {"room_name": "iso-room", "participant_identity": "a"}))[0] == 200
    status, rooms = await call(http, "GET", f"{base}/rooms", "globex")
    assert status == 200 and "iso-room" not in [r["name"] for r in rooms["rooms"]]
    missing = await call(http, "GET", f"{base}/rooms/no-such-room", "globex")
    theirs = await call(http, "GET", f"{base}/rooms/iso-room", "globex")
    assert missing == (404, {"error": "Room 'no-such-room' not found or not accessible", "code": "ROOM_NOT_FOUND"})
    assert theirs == (404, {"error": "Room 'iso-room' not found or not accessible", "code": "ROOM_NOT_FOUND"})
    status, body = await call(http, "POST", f"{base}/token", "globex",
                              {"room_name": "iso-room", "participant_identity": "g"})
    assert (status, body["code"]) == (403, "ROOM_ACCESS_DENIED") and "token" not in body
    status, mine = await call(http, "GET", f"{base}/rooms/iso-room", "acme")
    assert status == 200 and json.loads(mine["metadata"]) == {"auth_id": "acme"}


async def test_a_name_stays_with_its_tenant_while_its_tokens_live(gw, http) -> None:
    """acme's room closes; globex may not take the name while acme's tokens for it are valid,
    and an acme user who rejoins with such a token brings the room back as acme's."""
    base = f"{gw.url}/livekit"
    status, tok = await call(http, "POST", f"{base}/token", "acme",
                             {"room_name": "lease-room", "participant_identity": "alice"})
    assert status == 200
    assert json.loads(claims_of(tok["token"]).room_config.metadata) == {"auth_id": "acme"}
    async with admin(gw) as lk:
        await lk.room.delete_room(api.DeleteRoomRequest(room="lease-room"))
    status, body = await call(http, "POST", f"{base}/token", "globex",
                              {"room_name": "lease-room", "participant_identity": "mallory"})
    assert (status, body["code"]) == (403, "ROOM_ACCESS_DENIED")
    async with admin(gw) as lk:
        assert not (await lk.room.list_rooms(api.ListRoomsRequest(names=["lease-room"]))).rooms
    ws = await join(http, tok["livekit_url"], tok["token"])  # auto_create brings it back
    try:
        status, room = await call(http, "GET", f"{base}/rooms/lease-room", "acme")
        assert status == 200 and json.loads(room["metadata"]) == {"auth_id": "acme"}
        assert [p["identity"] for p in room["participants"]] == ["alice"]
        assert (await call(http, "GET", f"{base}/rooms/lease-room", "globex"))[0] == 404
    finally:
        await ws.close()


async def test_rooms_without_a_tenant_are_never_claimed(gw, http) -> None:
    """The anchor let the first tenant asking for a token claim an untagged room; not here."""
    metadata = {"orphan-plain": "", "orphan-text": "not json", "orphan-list": '["auth_id"]',
                "orphan-other-keys": '{"topic": "x"}', "orphan-empty-id": '{"auth_id": ""}',
                "orphan-number-id": '{"auth_id": 7}'}
    async with admin(gw) as lk:
        for name, md in metadata.items():
            await lk.room.create_room(api.CreateRoomRequest(name=name, metadata=md))
    for tenant in TENANTS:
        status, rooms = await call(http, "GET", f"{gw.url}/livekit/rooms", tenant)
        assert not set(metadata) & {r["name"] for r in rooms["rooms"]}
        for name in metadata:
            status, body = await call(http, "POST", f"{gw.url}/livekit/token", tenant,
                                      {"room_name": name, "participant_identity": "x"})
            assert (status, body["code"]) == (403, "ROOM_ACCESS_DENIED"), (tenant, name)
            assert (await call(http, "GET", f"{gw.url}/livekit/rooms/{name}", tenant))[0] == 404
    async with admin(gw) as lk:
        rooms = {r.name: r.metadata for r in (await lk.room.list_rooms(api.ListRoomsRequest(
            names=list(metadata)))).rooms}
    assert rooms == metadata  # untouched


async def test_room_details_remove_and_mute(gw, http) -> None:
    base = f"{gw.url}/livekit"
    status, tok = await call(http, "POST", f"{base}/token", "acme",
                             {"room_name": "ops-room", "participant_identity": "alice",
                              "participant_name": "Alice"})
    ws = await join(http, tok["livekit_url"], tok["token"])
    try:
        status, room = await call(http, "GET", f"{base}/rooms/ops-room", "acme")
        assert status == 200
        assert set(room) == {"sid", "name", "num_participants", "max_participants", "creation_time",
                             "metadata", "active_recording", "participants"}
        [p] = room["participants"]
        assert (p["identity"], p["name"], p["kind"], p["is_publisher"]) == ("alice", "Alice", "STANDARD", False)
        assert p["state"] in ("JOINING", "JOINED") and p["sid"].startswith("PA_")
        assert p["attributes"] == {} and isinstance(p["joined_at"], int)

        # another tenant: masked, and nothing happens
        for method, path, body in (
                ("DELETE", "participant", {"room_name": "ops-room", "participant_identity": "alice"}),
                ("POST", "participant/mute", {"room_name": "ops-room", "participant_identity": "alice",
                                              "track_sid": "TR_x", "muted": True})):
            status, err = await call(http, method, f"{base}/{path}", "globex", body)
            assert (status, err["code"]) == (404, "ROOM_NOT_FOUND")
        async with admin(gw) as lk:
            assert [x.identity for x in (await lk.room.list_participants(
                api.ListParticipantsRequest(room="ops-room"))).participants] == ["alice"]

        status, err = await call(http, "POST", f"{base}/participant/mute", "acme",
                                 {"room_name": "ops-room", "participant_identity": "alice",
                                  "track_sid": "TR_none", "muted": True})
        assert (status, err["code"]) == (404, "TRACK_NOT_FOUND")
        status, err = await call(http, "POST", f"{base}/participant/mute", "acme",
                                 {"room_name": "ops-room", "participant_identity": "nobody",
                                  "track_sid": "TR_none", "muted": True})
        assert (status, err["code"]) == (404, "PARTICIPANT_NOT_FOUND")

        status, body = await call(http, "DELETE", f"{base}/participant", "acme",
                                  {"room_name": "ops-room", "participant_identity": "alice"})
        assert (status, body) == (200, {"status": "removed", "room_name": "ops-room",
                                        "participant_identity": "alice"})
        msg = await ws.receive(timeout=10)  # the server tells the participant and closes
        assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        async with admin(gw) as lk:
            assert not (await lk.room.list_participants(api.ListParticipantsRequest(room="ops-room"))).participants
        status, err = await call(http, "DELETE", f"{base}/participant", "acme",
                                 {"room_name": "ops-room", "participant_identity": "alice"})
        assert (status, err["code"]) == (404, "PARTICIPANT_NOT_FOUND")
    finally:
        await ws.close()


async def test_bad_requests_are_json_400_404_405(gw, http) -> None:
    base = f"{gw.url}/livekit"
    bad_bodies = ["", "not json", "[]", "42", '{"room_name": 5, "participant_identity": "a"}',
                  '{"room_name": "r"}', '{"room_name": "", "participant_identity": "a"}',
                  '{"room_name": null, "participant_identity": "a"}',
                  '{"room_name": "r", "participant_identity": "a", "participant_name": null}',
                  '{"room_name": "r", "participant_identity": "a", "participant_name": ["x"]}',
                  json.dumps({"room_name": "r" * 300, "participant_identity": "a"}),
                  b"\xff\xfe{", '{"room_name": "\\ud800", "participant_identity": "a"}',
                  '{"room_name": "r", "participant_identity": "a", "participant_name": "x\\udc00"}']
    for body in bad_bodies:
        status, err = await call(http, "POST", f"{base}/token", "acme", body)
        assert (status, err["code"]) == (400, "INVALID_REQUEST"), (body, err)
    for body in ('{"room_name": "r", "participant_identity": "a", "track_sid": "t"}',
                 '{"room_name": "r", "participant_identity": "a", "track_sid": "t", "muted": "yes"}'):
        status, err = await call(http, "POST", f"{base}/participant/mute", "acme", body)
        assert (status, err["code"]) == (400, "INVALID_REQUEST") and "muted" in err["error"]
    status, err = await call(http, "DELETE", f"{base}/participant", "acme",
                             '{"room_name": "\\udfff", "participant_identity": "a"}')
    assert (status, err["code"]) == (400, "INVALID_REQUEST") and "surrogate" in err["error"]
    status, err = await call(http, "DELETE", f"{base}/participant", "acme", "{}")
    assert (status, err["code"]) == (400, "INVALID_REQUEST")
    for path in ("", "nope", "rooms/", "rooms/a/b", "participant/mute/x", "tokens"):
        status, err = await call(http, "GET", f"{base}/{path}", "acme")
        assert (status, err["code"]) == (404, "NOT_FOUND"), path
    async with http.post(f"{base}/rooms", headers={"Authorization": f"Bearer {TENANTS['acme']}"}) as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "GET"
        assert (await resp.json())["code"] == "METHOD_NOT_ALLOWED"
    status, _ = await call(http, "GET", f"{base}/token", "acme")
    assert status == 405
    # a room name with a slash and spaces, percent-encoded in the path
    name = "team a/b ü"
    assert (await call(http, "POST", f"{base}/token", "acme",
                       {"room_name": name, "participant_identity": "x"}))[0] == 200
    status, room = await call(http, "GET", f"{base}/rooms/{quote(name, safe='')}", "acme")
    assert status == 200 and room["name"] == name


async def test_open_mode_env_switch_and_off_switch(server_factory, http) -> None:
    """auth off: no tenant, every room visible (the anchor's backward-compatible mode);
    AUTH_REQUIRED=true in the environment turns auth on; without gateway.enabled, no routes."""
    s = server_factory(*SERVER_ARGS, config=gateway_config(auth_required=False))
    async with admin(s) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="untagged", metadata="plain"))
    status, rooms = await call(http, "GET", f"{s.url}/livekit/rooms")
    assert status == 200 and [r["name"] for r in rooms["rooms"]] == ["untagged"]
    status, tok = await call(http, "POST", f"{s.url}/livekit/token", None,
                             {"room_name": "untagged", "participant_identity": "u"})
    assert status == 200 and claims_of(tok["token"]).video.room == "untagged"
    status, tok = await call(http, "POST", f"{s.url}/livekit/token", "acme",  # a secret changes nothing
                             {"room_name": "fresh", "participant_identity": "u"})
    async with admin(s) as lk:
        [fresh] = (await lk.room.list_rooms(api.ListRoomsRequest(names=["fresh"]))).rooms
        assert fresh.metadata == ""

    s2 = server_factory(*SERVER_ARGS, config=gateway_config(auth_required=False),
                        env={"AUTH_REQUIRED": "true"})
    assert (await call(http, "GET", f"{s2.url}/livekit/rooms"))[0] == 401
    assert (await call(http, "GET", f"{s2.url}/livekit/rooms", "acme"))[0] == 200

    s3 = server_factory()  # a plain dev server
    status, err = await call(http, "GET", f"{s3.url}/livekit/rooms", "acme")
    assert status == 404 and "gateway.enabled" in err["error"]
    async with http.get(f"{s3.url}/openapi.json") as resp:
        assert resp.status == 200 and (await resp.json())["openapi"].startswith("3.")


def test_gateway_config_errors() -> None:
    def load(body: str, env: dict | None = None):
        return load_config(config_body=f"keys:\n  k: {'s' * 32}\n" + body, env=env or {})

    assert load("").gateway.enabled is False
    cfg = load("gateway:\n  enabled: true\n  auth_required: true\n  tenants:\n    a: x1\n    7: x2\n")
    assert cfg.gateway.tenants == {"a": "x1", "7": "x2"}
    for body, message in (
            ("gateway:\n  enabled: true\n  auth_required: true\n", "at least one tenant"),
            ("gateway:\n  tenants:\n    a: same\n    b: same\n", "share a secret"),
            ("gateway:\n  tenants:\n    a: ''\n", "non-empty"),
            ("gateway:\n  tenants: [a, b]\n", "gateway.tenants"),
            ("gateway:\n  token_ttl: 0\n", "token_ttl"),
            ("gateway:\n  livekit_url: ftp://x\n", "livekit_url"),
            ("analytics:\n  retention_days: 0\n", "retention_days")):
        with pytest.raises(ConfigError, match=message):
            load(body)
    assert load("", {"AUTH_REQUIRED": "1"}).gateway.auth_required is True
    assert load("gateway:\n  auth_required: true\n", {"AUTH_REQUIRED": "false"}).gateway.auth_required is False
    with pytest.raises(ConfigError, match="AUTH_REQUIRED"):
        load("", {"AUTH_REQUIRED": "maybe"})


@pytest.fixture
def doomed_redis(tmp_path):
    """A private redis-server the test kills: (its port, the process)."""
    exe = shutil.which("redis-server")
    assert exe, "redis-server is needed (make test installs it)"
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, proc
    proc.kill()
    proc.wait()


async def test_500_only_when_the_room_service_fails(server_factory, http, doomed_redis) -> None:
    """The store under the room service goes away: what needs it fails with a JSON 500; what
    does not keeps answering."""
    port, redis = doomed_redis
    s = server_factory(*SERVER_ARGS, config=gateway_config(extra=f"redis:\n  address: 127.0.0.1:{port}\n"))
    status, tok = await call(http, "POST", f"{s.url}/livekit/token", "acme",
                             {"room_name": "before", "participant_identity": "a"})
    assert status == 200
    ws = await join(http, tok["livekit_url"], tok["token"])
    try:
        redis.kill()
        redis.wait()
        status, err = await call(http, "POST", f"{s.url}/livekit/token", "acme",
                                 {"room_name": "after", "participant_identity": "a"})
        assert (status, err["code"]) == (500, "ROOM_SERVICE_FAILED")
        # removing a participant stores the room's new state: the room service itself fails
        status, err = await call(http, "DELETE", f"{s.url}/livekit/participant", "acme",
                                 {"room_name": "before", "participant_identity": "a"})
        assert (status, err["code"]) == (500, "ROOM_SERVICE_FAILED")
        status, rooms = await call(http, "GET", f"{s.url}/livekit/rooms", "acme")
        assert status == 200 and [r["name"] for r in rooms["rooms"]] == ["before"]
        status, err = await call(http, "GET", f"{s.url}/livekit/rooms/after", "acme")
        assert (status, err["code"]) == (404, "ROOM_NOT_FOUND")
    finally:
        await ws.close()
    assert "gateway_store_failed" in s.log_text() and "gateway_room_service_failed" in s.log_text()
