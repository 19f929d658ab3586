"""Tenant isolation as a property: random sequences of create / join / list / get / remove / mute
by several tenants (and an operator creating untagged rooms) against one real server.

A model says who owns each room and who is in it. After every step the gateway's answer must be
the model's, and at the end of each sequence the server's own API (server keys) must show every
room's `auth_id` and participants exactly as the model has them: no tenant ever saw, claimed or
touched a room that is not its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import aiohttp
import pytest
from conftest import ServerProcess
from gwfix import SERVER_ARGS, TENANTS, admin, call, claims_of, gateway_config, join
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from livekit import api

ROOMS = ["alpha", "beta", "gamma"]
IDENTITIES = ["u1", "u2"]
tenants = st.sampled_from(sorted(TENANTS))
rooms = st.sampled_from(ROOMS)
identities = st.sampled_from(IDENTITIES)

operations = st.one_of(
    st.tuples(st.just("token"), tenants, rooms, identities),
    st.tuples(st.just("join"), tenants, rooms, identities),
    st.tuples(st.just("list"), tenants),
    st.tuples(st.just("get"), tenants, rooms),
    st.tuples(st.just("remove"), tenants, rooms, identities),
    st.tuples(st.just("mute"), tenants, rooms, identities),
    st.tuples(st.just("orphan"), rooms),
)

examples = itertools.count()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("gw-iso"), *SERVER_ARGS, config=gateway_config()).start()
    yield s
    s.stop()


class Model:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.owner: dict[str, str | None] = {}  # room -> tenant (None: the operator's, untagged)
        self.people: dict[str, set[str]] = {}  # room -> identities in it

    def name(self, room: str) -> str:
        return f"{self.prefix}-{room}"

    def may(self, tenant: str, room: str) -> bool:
        return room in self.owner and self.owner[room] == tenant


async def run(server: ServerProcess, ops: list[tuple], prefix: str) -> None:
    model = Model(prefix)
    base = f"{server.url}/livekit"
    sockets: dict[tuple[str, str], aiohttp.ClientWebSocketResponse] = {}
    async with aiohttp.ClientSession() as http, admin(server) as lk:
        try:
            for op in ops:
                kind = op[0]
                if kind in ("token", "join"):
                    _, tenant, room, identity = op
                    name = model.name(room)
                    status, body = await call(http, "POST", f"{base}/token", tenant,
                                              {"room_name": name, "participant_identity": identity})
                    if room not in model.owner or model.owner[room] == tenant:
                        assert status == 200, (op, body)
                        model.owner[room] = tenant
                        video = claims_of(body["token"]).video
                        assert video.room == name and video.room_join
                        assert not (video.room_list or video.room_create or video.room_admin or video.room_record)
                        if kind == "join":
                            old = sockets.pop((room, identity), None)
                            sockets[(room, identity)] = await join(http, body["livekit_url"], body["token"])
                            if old is not None:
                                await old.close()  # replaced by the new one (duplicate identity)
                            model.people.setdefault(room, set()).add(identity)
                    else:
                        assert (status, body["code"]) == (403, "ROOM_ACCESS_DENIED"), (op, body)
                elif kind == "list":
                    _, tenant = op
                    status, body = await call(http, "GET", f"{base}/rooms", tenant)
                    assert status == 200
                    # earlier sequences deleted their rooms: the list is exactly this tenant's
                    assert {r["name"] for r in body["rooms"]} == \
                        {model.name(r) for r, o in model.owner.items() if o == tenant}, op
                elif kind == "get":
                    _, tenant, room = op
                    status, body = await call(http, "GET", f"{base}/rooms/{model.name(room)}", tenant)
                    if model.may(tenant, room):
                        assert status == 200, (op, body)
                        assert {p["identity"] for p in body["participants"]} == model.people.get(room, set())
                    else:
                        assert (status, body) == (404, {
                            "error": f"Room '{model.name(room)}' not found or not accessible",
                            "code": "ROOM_NOT_FOUND"}), op
                elif kind == "remove":
                    _, tenant, room, identity = op
                    status, body = await call(http, "DELETE", f"{base}/participant", tenant,
                                              {"room_name": model.name(room), "participant_identity": identity})
                    if not model.may(tenant, room):
                        assert (status, body["code"]) == (404, "ROOM_NOT_FOUND"), op
                    elif identity in model.people.get(room, set()):
                        assert (status, body["status"]) == (200, "removed"), (op, body)
                        model.people[room].discard(identity)
                        ws = sockets.pop((room, identity))
                        await ws.close()
                    else:
                        assert (status, body["code"]) == (404, "PARTICIPANT_NOT_FOUND"), (op, body)
                elif kind == "mute":
                    _, tenant, room, identity = op
                    status, body = await call(http, "POST", f"{base}/participant/mute", tenant,
                                              {"room_name": model.name(room), "participant_identity": identity,
                                               "track_sid": "TR_none", "muted": True})
                    if not model.may(tenant, room):
                        expected = "ROOM_NOT_FOUND"
                    elif identity in model.people.get(room, set()):
                        expected = "TRACK_NOT_FOUND"  # signalling-only participants publish nothing
                    else:
                        expected = "PARTICIPANT_NOT_FOUND"
                    assert (status, body["code"]) == (404, expected), (op, body)
                elif kind == "orphan":
                    _, room = op
                    await lk.room.create_room(api.CreateRoomRequest(name=model.name(room)))
                    model.owner.setdefault(room, None)

            # the operator's view: owners and participants exactly as the model says
            listed = (await lk.room.list_rooms(api.ListRoomsRequest(
                names=[model.name(r) for r in ROOMS]))).rooms
            assert {r.name for r in listed} == {model.name(r) for r in model.owner}
            for r in listed:
                room = r.name.split("-", 1)[1]
                tag = json.loads(r.metadata).get("auth_id") if r.metadata else None
                assert tag == model.owner[room], (r.name, r.metadata)
                people = (await lk.room.list_participants(api.ListParticipantsRequest(room=r.name))).participants
                assert {p.identity for p in people} == model.people.get(room, set()), r.name
        finally:
            for ws in sockets.values():
                await ws.close()
            for room in model.owner:
                await lk.room.delete_room(api.DeleteRoomRequest(room=model.name(room)))


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(operations, min_size=1, max_size=14))
def test_no_tenant_sees_or_touches_another_tenants_room(gw, ops) -> None:
    asyncio.run(run(gw, ops, f"p{next(examples)}"))
