"""One suite, both store backends: SQLite (a real file) and Redis (a real redis-server).

The KV contract (put/get/delete/items/put_many) and the typed `Store` on top must behave the
same on both (ARCHITECTURE.md rule 5); then a real server keeps its rooms in Redis when
`redis.address` is configured, and gets them back after a restart.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
import yaml
from conftest import API_KEY, API_SECRET, free_udp_port
from livekit import api
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.models import Room
from livekit.protocol.room import RoomConfiguration

from lkserver.store import SQLiteKV, Store
from lkserver.store.redis import RedisKV

UNIT_DB = 9  # Redis databases of their own, flushed by these tests only
SERVER_DB = 10


async def flushed(redis_url: str, db: int) -> None:
    host, port = redis_url.rsplit(":", 1)
    client = aioredis.Redis(host=host, port=int(port), db=db)
    await client.flushdb()
    await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def kv(request, tmp_path):
    if request.param == "sqlite":
        backend = SQLiteKV(str(tmp_path / "store" / "lkserver.db"))
    else:
        redis_url = request.getfixturevalue("redis_url")
        await flushed(redis_url, UNIT_DB)
        backend = RedisKV(redis_url, db=UNIT_DB)
    yield backend
    await backend.close()


async def test_put_get_delete(kv) -> None:
    assert await kv.get("ns", "missing") is None
    await kv.put("ns", "k", b"v1")
    assert await kv.get("ns", "k") == b"v1"
    await kv.put("ns", "k", b"v2")  # overwrite
    assert await kv.get("ns", "k") == b"v2"
    assert await kv.get("other", "k") is None  # namespaces are separate
    assert await kv.delete("ns", "k") is True
    assert await kv.delete("ns", "k") is False
    assert await kv.get("ns", "k") is None


async def test_values_and_keys_round_trip_exactly(kv) -> None:
    values = {"empty": b"", "nul": b"\x00a\x00", "binary": bytes(range(256)), "big": b"x" * 1_000_000,
              "ünï cødé/key:with*chars": b"u"}
    for k, v in values.items():
        await kv.put("bin", k, v)
    for k, v in values.items():
        assert await kv.get("bin", k) == v, k
    assert dict(await kv.items("bin")) == values


async def test_items_and_put_many(kv) -> None:
    assert await kv.items("rooms-x") == []
    await kv.put_many([("rooms-x", "b", b"2"), ("rooms-x", "a", b"1"), ("other-x", "z", b"9")])
    assert await kv.items("rooms-x") == [("a", b"1"), ("b", b"2")]  # sorted by key, one namespace
    assert await kv.items("other-x") == [("z", b"9")]
    await kv.put_many([("rooms-x", "a", b"1'"), ("rooms-x", "c", b"3")])
    assert await kv.items("rooms-x") == [("a", b"1'"), ("b", b"2"), ("c", b"3")]
    await kv.put_many([])


async def test_typed_store_room_round_trip(kv) -> None:
    store = Store(kv)
    info = Room(sid="RM_abcdefghijkm", name="st-room", empty_timeout=30, departure_timeout=5,
                creation_time=1_800_000_000, creation_time_ms=1_800_000_000_123, metadata="m",
                num_participants=2, max_participants=7, turn_password="pw")
    internal = RoomConfiguration(agents=[RoomAgentDispatch(agent_name="helper", metadata="x")],
                                 min_playout_delay=10, max_playout_delay=200, sync_streams=True)
    await store.store_room(info, internal, departed_at=1_800_000_010.25)
    loaded = await store.load_room("st-room")
    assert loaded is not None
    assert loaded.info == info and loaded.internal == internal and loaded.departed_at == 1_800_000_010.25
    assert await store.room_exists("st-room") and not await store.room_exists("st-none")
    assert await store.load_room("st-none") is None
    # an update of the record alone keeps the internal config and the departure time
    info.metadata = "m2"
    await store.store_room(info)
    loaded = await store.load_room("st-room")
    assert loaded.info.metadata == "m2" and loaded.internal == internal and loaded.departed_at == 1_800_000_010.25
    # a room stored without internal config or departure
    await store.store_room(Room(sid="RM_other", name="st-plain"))
    rooms = {r.info.name: r for r in await store.list_rooms()}
    assert set(rooms) == {"st-room", "st-plain"}
    assert rooms["st-room"].internal == internal and rooms["st-room"].departed_at == 1_800_000_010.25
    assert rooms["st-plain"].internal == RoomConfiguration() and rooms["st-plain"].departed_at is None
    await store.delete_room("st-room")
    assert await store.load_room("st-room") is None
    assert [r.info.name for r in await store.list_rooms()] == ["st-plain"]
    # nothing of the deleted room is left behind in any namespace
    for ns in ("rooms", "room_internal", "room_departed"):
        assert all(k != "st-room" for k, _ in await kv.items(ns))


async def test_sqlite_data_survives_reopening(tmp_path) -> None:
    path = str(tmp_path / "reopen.db")
    first = Store(SQLiteKV(path))
    await first.store_room(Room(sid="RM_x", name="st-reopen"), RoomConfiguration(sync_streams=True), 5.0)
    await first.close()
    second = Store(SQLiteKV(path))
    [room] = await second.list_rooms()
    assert (room.info.sid, room.internal.sync_streams, room.departed_at) == ("RM_x", True, 5.0)
    await second.close()


async def test_server_on_redis(server_factory, redis_url, tmp_path) -> None:
    await flushed(redis_url, SERVER_DB)
    conf = yaml.safe_dump({"keys": {API_KEY: API_SECRET}, "bind_addresses": ["127.0.0.1"],
                           "rtc": {"tcp_port": 0, "udp_port": free_udp_port()},
                           "redis": {"address": redis_url, "db": SERVER_DB}})
    s = server_factory(config=conf)
    async with api.LiveKitAPI(s.url, API_KEY, API_SECRET) as lk:
        made = await lk.room.create_room(api.CreateRoomRequest(name="redis-room", empty_timeout=600, metadata="r"))
        await lk.room.create_room(api.CreateRoomRequest(name="redis-gone"))
        await lk.room.delete_room(api.DeleteRoomRequest(room="redis-gone"))
        listed = await lk.room.list_rooms(api.ListRoomsRequest())
    assert [r.name for r in listed.rooms] == ["redis-room"]
    # the record is in Redis (LiveKit's layout: a `rooms` hash of binary Room protobufs), not in SQLite
    host, port = redis_url.rsplit(":", 1)
    client = aioredis.Redis(host=host, port=int(port), db=SERVER_DB)
    try:
        raw = await client.hget("rooms", "redis-room")
        assert raw is not None and Room.FromString(raw).sid == made.sid
        assert await client.hget("rooms", "redis-gone") is None
    finally:
        await client.aclose()
    assert not (s.data_dir / "lkserver.db").exists()
    s.kill()
    s.start()
    async with api.LiveKitAPI(s.url, API_KEY, API_SECRET) as lk:
        listed = await lk.room.list_rooms(api.ListRoomsRequest())
    assert [(r.name, r.sid, r.metadata, r.creation_time) for r in listed.rooms] == [
        ("redis-room", made.sid, "r", made.creation_time)]


def test_server_refuses_unreachable_redis(tmp_path) -> None:
    """A configured but unreachable Redis is a clear startup error, not a server without its store."""
    import subprocess
    import sys

    from conftest import ROOT, free_port

    config = tmp_path / "livekit.yaml"
    config.write_text(yaml.safe_dump({"keys": {API_KEY: API_SECRET}, "bind_addresses": ["127.0.0.1"],
                                      "rtc": {"tcp_port": 0, "udp_port": free_udp_port()},
                                      "redis": {"address": f"127.0.0.1:{free_port()}"}}))
    proc = subprocess.run([sys.executable, "-m", "lkserver", "serve", "--config", str(config), "--port", "0",
                           "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, timeout=120,
                          cwd=str(ROOT))
    assert proc.returncode == 1
    assert "lkserver: cannot use the Redis store at 127.0.0.1:" in proc.stderr
    assert "lkserver listening" not in proc.stderr
