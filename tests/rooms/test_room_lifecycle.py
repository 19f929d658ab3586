"""Room lifecycle (server-api.md §3.1, §4): creation defaults, presets and limits from the config,
and the close rule — on a real server, and on the RoomManager domain with a fake clock.

Close rule: a room with no non-dependent participants closes `departure_timeout` after the last
one left if anyone ever came and went, otherwise `empty_timeout` after its creation. Agents and
recorders neither keep a room alive nor count toward `num_participants` or `max_participants`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import yaml
from conftest import API_KEY, API_SECRET, free_udp_port
from livekit import api
from livekit.protocol.models import DisconnectReason, ParticipantInfo, ParticipantPermission
from livekit.protocol.room import CreateRoomRequest

from lkserver.config import RoomSettings
from lkserver.events import EventBus, EventName
from lkserver.rooms import Participant, RoomFull, RoomManager, RoomNotFound
from lkserver.store import SQLiteKV, Store

DEADLINE = 30.0


def server_config(extra: dict[str, Any]) -> str:
    """A livekit.yaml for a non-dev server on ephemeral ports, with `extra` merged in."""
    conf: dict[str, Any] = {
        "keys": {API_KEY: API_SECRET},
        "bind_addresses": ["127.0.0.1"],
        "rtc": {"tcp_port": 0, "udp_port": free_udp_port()},
    }
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(conf.get(k), dict):
            conf[k] = {**conf[k], **v}
        else:
            conf[k] = v
    return yaml.safe_dump(conf)


def client(url: str) -> api.LiveKitAPI:
    return api.LiveKitAPI(url, API_KEY, API_SECRET)


async def room_names(lk: api.LiveKitAPI) -> set[str]:
    return {r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms}


# -- on a real server --------------------------------------------------------------------------------

async def test_empty_timeout_closes_a_room_nobody_joined(server) -> None:
    async with client(server.url) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="lc-short", empty_timeout=1))
        await lk.room.create_room(api.CreateRoomRequest(name="lc-long", empty_timeout=3600))
        deadline = time.monotonic() + DEADLINE
        while "lc-short" in await room_names(lk):
            assert time.monotonic() < deadline, "lc-short never closed"
            await asyncio.sleep(0.2)
        assert "lc-long" in await room_names(lk)
        # a closed room is gone for good: operations on it answer not_found, a create makes a new one
        with pytest.raises(api.TwirpError) as e:
            await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="lc-short", metadata="x"))
        assert e.value.code == "not_found"


async def test_create_room_defaults_from_config(server_factory) -> None:
    s = server_factory(config=server_config({"room": {"empty_timeout": 42, "departure_timeout": 7,
                                                      "max_participants": 9}}))
    async with client(s.url) as lk:
        room = await lk.room.create_room(api.CreateRoomRequest(name="lc-defaults"))
        assert (room.empty_timeout, room.departure_timeout, room.max_participants) == (42, 7, 9)
        room = await lk.room.create_room(api.CreateRoomRequest(name="lc-explicit", empty_timeout=11,
                                                               departure_timeout=2, max_participants=1))
        assert (room.empty_timeout, room.departure_timeout, room.max_participants) == (11, 2, 1)
        # 0 means "the server default", never "no timeout"
        room = await lk.room.create_room(api.CreateRoomRequest(name="lc-zero", empty_timeout=0, max_participants=0))
        assert (room.empty_timeout, room.max_participants) == (42, 9)


async def test_room_presets_from_config(server_factory) -> None:
    s = server_factory(config=server_config({"room": {"room_configurations": {
        "small": {"max_participants": 4, "empty_timeout": 60, "departure_timeout": 5, "metadata": "preset-meta"},
        "camel": {"emptyTimeout": 61, "maxParticipants": 2},
    }}}))
    async with client(s.url) as lk:
        room = await lk.room.create_room(api.CreateRoomRequest(name="lc-small", room_preset="small"))
        assert (room.max_participants, room.empty_timeout, room.departure_timeout, room.metadata) == (
            4, 60, 5, "preset-meta")
        # request fields win over the preset; the preset fills only what the request leaves zero
        room = await lk.room.create_room(api.CreateRoomRequest(name="lc-override", room_preset="small",
                                                               empty_timeout=30, metadata="mine"))
        assert (room.max_participants, room.empty_timeout, room.metadata) == (4, 30, "mine")
        room = await lk.room.create_room(api.CreateRoomRequest(name="lc-camel", room_preset="camel"))
        assert (room.empty_timeout, room.max_participants, room.departure_timeout) == (61, 2, 20)
        with pytest.raises(api.TwirpError) as e:
            await lk.room.create_room(api.CreateRoomRequest(name="lc-nope", room_preset="large"))
        assert (e.value.code, e.value.status) == ("invalid_argument", 400)
        assert "unknown room configuration in create room request" in e.value.message
        assert "lc-nope" not in await room_names(lk)


async def test_limits_from_config(server_factory) -> None:
    s = server_factory(config=server_config({"limit": {"max_room_name_length": 10, "max_metadata_size": 16}}))
    async with client(s.url) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="a" * 10, metadata="m" * 16))
        with pytest.raises(api.TwirpError) as e:
            await lk.room.create_room(api.CreateRoomRequest(name="a" * 11))
        assert e.value.code == "invalid_argument"
        assert e.value.message.endswith("room name length exceeds limits: max length 10")
        # lengths are bytes: 6 x "ö" is 12 bytes
        with pytest.raises(api.TwirpError):
            await lk.room.create_room(api.CreateRoomRequest(name="ö" * 6))
        with pytest.raises(api.TwirpError) as e:
            await lk.room.create_room(api.CreateRoomRequest(name="lc-meta", metadata="m" * 17))
        assert (e.value.code, e.value.message) == ("invalid_argument", "metadata size exceeds limits 16")
        assert e.value.metadata == {"argument": "metadata size exceeds limits"}
        await lk.room.create_room(api.CreateRoomRequest(name="lc-meta"))
        with pytest.raises(api.TwirpError) as e:
            await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="lc-meta", metadata="é" * 9))
        assert e.value.message == "metadata size exceeds limits 16"
        assert await room_names(lk) == {"a" * 10, "lc-meta"}


# -- the domain, with a fake clock -------------------------------------------------------------------

class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> tuple[EventBus, list]:
    bus = EventBus()
    seen: list = []
    bus.subscribe(seen.append)
    return bus, seen


@pytest.fixture
def store():
    return Store(SQLiteKV(":memory:"))


@pytest.fixture
def manager(store, events, clock) -> RoomManager:
    return RoomManager(RoomSettings(empty_timeout=300, departure_timeout=20), store, events[0], clock=clock)


def person(identity: str, **info: Any) -> Participant:
    return Participant(ParticipantInfo(identity=identity, sid="PA_" + identity, **info))


async def open_rooms(m: RoomManager) -> set[str]:
    await m.close_idle_rooms()
    return {r.name for r in m.list_rooms()}


async def test_domain_empty_timeout_counts_from_creation(manager, clock, events, store) -> None:
    room, created = await manager.create_room(CreateRoomRequest(name="d-empty", empty_timeout=10))
    assert created and room.creation_time == int(clock.now) and room.creation_time_ms == int(clock.now * 1000)
    assert [e.name for e in events[1]] == [EventName.ROOM_STARTED]
    clock.now += 9.9
    assert await open_rooms(manager) == {"d-empty"}
    clock.now += 0.1
    assert await open_rooms(manager) == set()
    assert [e.name for e in events[1]] == [EventName.ROOM_STARTED, EventName.ROOM_FINISHED]
    assert events[1][1].room.sid == room.sid
    assert await store.list_rooms() == []


async def test_domain_departure_timeout_after_someone_left(manager, clock) -> None:
    await manager.create_room(CreateRoomRequest(name="d-dep", empty_timeout=10, departure_timeout=3))
    clock.now += 1
    room, _ = await manager.join(CreateRoomRequest(name="d-dep"), person("alice"), may_create=False)
    clock.now += 60  # far beyond empty_timeout: somebody is in the room
    assert await open_rooms(manager) == {"d-dep"}
    assert manager.list_rooms()[0].num_participants == 1
    await manager.participant_left(room, room.participants["alice"], DisconnectReason.CLIENT_INITIATED)
    assert manager.list_rooms()[0].num_participants == 0
    clock.now += 2
    assert await open_rooms(manager) == {"d-dep"}  # departure_timeout, not empty_timeout, now applies
    clock.now += 1
    assert await open_rooms(manager) == set()


async def test_domain_dependent_participants_do_not_keep_a_room(manager, clock) -> None:
    await manager.create_room(CreateRoomRequest(name="d-agents", empty_timeout=10, departure_timeout=3,
                                                max_participants=1))
    dependents = [
        person("agent", kind=ParticipantInfo.Kind.AGENT),
        person("egress", kind=ParticipantInfo.Kind.EGRESS),
        person("recorder", permission=ParticipantPermission(recorder=True)),
        person("agent-grant", permission=ParticipantPermission(agent=True)),
    ]
    for p in dependents:
        room, _ = await manager.join(CreateRoomRequest(name="d-agents"), p, may_create=False)
    # max_participants=1 does not count them: one person still fits, a second does not
    await manager.join(CreateRoomRequest(name="d-agents"), person("bob"), may_create=False)
    with pytest.raises(RoomFull):
        await manager.join(CreateRoomRequest(name="d-agents"), person("carol"), may_create=False)
    listed = manager.list_rooms(["d-agents"])[0]
    assert listed.num_participants == 1
    assert len(manager.list_participants("d-agents")) == 5  # ListParticipants shows everyone
    # a dependent leaving is no departure
    await manager.participant_left(room, room.participants["agent"], DisconnectReason.CLIENT_INITIATED)
    assert room.last_left_at is None
    await manager.participant_left(room, room.participants["bob"], DisconnectReason.CLIENT_INITIATED)
    clock.now += 2
    assert await open_rooms(manager) == {"d-agents"}
    clock.now += 1  # three remaining dependents do not hold it open
    assert await open_rooms(manager) == set()
    assert room.participants == {}


async def test_domain_only_dependents_close_at_empty_timeout(manager, clock) -> None:
    await manager.create_room(CreateRoomRequest(name="d-lonely-agent", empty_timeout=10))
    await manager.join(CreateRoomRequest(name="d-lonely-agent"), person("a", kind=ParticipantInfo.Kind.AGENT),
                       may_create=False)
    clock.now += 10
    assert await open_rooms(manager) == set()


async def test_domain_get_or_create_and_join_rules(manager, clock, events) -> None:
    first, created = await manager.create_room(CreateRoomRequest(name="d-idem", metadata="one"))
    again, created_again = await manager.create_room(CreateRoomRequest(name="d-idem", metadata="two",
                                                                       empty_timeout=5))
    assert created and not created_again
    assert (again.sid, again.metadata, again.empty_timeout) == (first.sid, "one", 300)
    assert [e.name for e in events[1]] == [EventName.ROOM_STARTED]  # once
    with pytest.raises(RoomNotFound):
        await manager.join(CreateRoomRequest(name="d-missing"), person("x"), may_create=False)
    room, _ = await manager.join(CreateRoomRequest(name="d-auto", empty_timeout=7), person("x"), may_create=True)
    assert room.info.empty_timeout == 7
    # a second join with the same identity replaces the first
    _, previous = await manager.join(CreateRoomRequest(name="d-auto"), person("x"), may_create=False)
    assert previous is not None and len(room.participants) == 1


async def test_domain_rooms_come_back_from_the_store(store, events, clock) -> None:
    settings = RoomSettings()
    first = RoomManager(settings, store, events[0], clock=clock)
    await first.create_room(CreateRoomRequest(name="d-kept", empty_timeout=100, departure_timeout=5))
    room, _ = await first.join(CreateRoomRequest(name="d-kept"), person("alice"), may_create=False)
    await first.create_room(CreateRoomRequest(name="d-idle", empty_timeout=100))
    clock.now += 50
    # a new manager on the same store: what a restart does
    second = RoomManager(settings, store, events[0], clock=clock)
    await second.start()
    await second.stop()
    assert {r.name for r in second.list_rooms()} == {"d-kept", "d-idle"}
    kept = second.get_room("d-kept")
    assert kept.sid == room.sid and kept.to_proto().num_participants == 0
    clock.now += 5  # alice went with the old process: departure_timeout from the restart
    assert await open_rooms(second) == {"d-idle"}
    clock.now += 45  # d-idle: 100 s from its creation, not from the restart
    assert await open_rooms(second) == set()
