"""Restart: rooms survive SIGKILL and SIGTERM with their sids, times, metadata and remaining timeouts.

The store (SQLite under the data dir) is written before a request is answered, so a room the API
reported as created is there after `kill -9`. Timeouts keep counting from the room's creation (or
its last departure), not from the restart. Official `livekit-api` as the client.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from conftest import API_KEY, API_SECRET
from google.protobuf.json_format import MessageToDict
from livekit import api

DEADLINE = 30.0  # generous: these wait for the server's 1 s close ticker, never for a precise time


async def rooms_of(url: str) -> dict[str, api.Room]:
    async with api.LiveKitAPI(url, API_KEY, API_SECRET) as lk:
        res = await lk.room.list_rooms(api.ListRoomsRequest())
    return {r.name: r for r in res.rooms}


async def create(url: str, **fields) -> api.Room:
    async with api.LiveKitAPI(url, API_KEY, API_SECRET) as lk:
        return await lk.room.create_room(api.CreateRoomRequest(**fields))


async def wait_until_gone(url: str, name: str, also_gone_first: str | None = None) -> None:
    """Poll ListRooms until `name` is gone; if `also_gone_first`, it must never outlive `name`."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        rooms = await rooms_of(url)
        if also_gone_first is not None and name not in rooms:
            assert also_gone_first not in rooms, f"{also_gone_first} outlived {name}: its timeout restarted"
        if name not in rooms:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"room {name} did not close within {DEADLINE} s")


def as_dict(room: api.Room) -> dict:
    return MessageToDict(room, preserving_proto_field_name=True)


async def test_rooms_survive_sigkill(server_factory) -> None:
    s = server_factory()
    made = [
        await create(s.url, name="rs-long", empty_timeout=3600, departure_timeout=60, metadata="meta-1"),
        await create(s.url, name="rs-default"),
        await create(s.url, name="rs-limits", empty_timeout=900, max_participants=5, metadata='{"k": "v"}'),
        await create(s.url, name="rs-unicode-ñ", empty_timeout=1200, metadata="ünïcødé ✓"),
    ]
    async with api.LiveKitAPI(s.url, API_KEY, API_SECRET) as lk:
        await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="rs-default", metadata="updated"))
    short = await create(s.url, name="rs-short", empty_timeout=2)
    before = await rooms_of(s.url)
    assert before["rs-default"].metadata == "updated"
    s.kill()
    assert s.proc.returncode == -9

    s.start()
    after = await rooms_of(s.url)
    for room in made:
        assert as_dict(after[room.name]) == as_dict(before[room.name]), room.name
        assert after[room.name].sid == room.sid and after[room.name].creation_time == room.creation_time
        assert after[room.name].creation_time_ms == room.creation_time_ms
    assert after["rs-default"].metadata == "updated"
    assert "rooms_restored" in s.log_text()
    # CreateRoom on a restored room is still get-or-create: the same room comes back unchanged
    again = await create(s.url, name="rs-long", metadata="ignored", empty_timeout=5)
    assert (again.sid, again.metadata, again.empty_timeout) == (made[0].sid, "meta-1", 3600)
    # the 2 s room closes on its own after the restart
    if "rs-short" in after:
        assert after["rs-short"].sid == short.sid
    await wait_until_gone(s.url, "rs-short")
    assert set(await rooms_of(s.url)) >= {r.name for r in made}


async def test_remaining_empty_timeout_is_not_reset(server_factory) -> None:
    """A room whose empty_timeout ran out while the server was down closes first thing after restart.

    Checked by order, not by clock: a control room made right after the restart with a shorter
    timeout (3 s) than the restored room's (5 s) must outlive it. Were the timeout restarted, the
    restored room would close 5 s after the restart, after the control.
    """
    s = server_factory()
    await create(s.url, name="rs-expired", empty_timeout=5)
    s.kill()
    await asyncio.sleep(6)  # the whole timeout passes while the server is down
    s.start()
    await create(s.url, name="rs-control", empty_timeout=3)
    await wait_until_gone(s.url, "rs-control", also_gone_first="rs-expired")


async def test_participants_at_kill_count_as_departed(server_factory) -> None:
    """A room that had someone in it when the server died closes after its departure_timeout."""
    s = server_factory()
    room = await create(s.url, name="rs-occupied", empty_timeout=3600, departure_timeout=1)
    token = (api.AccessToken(API_KEY, API_SECRET).with_identity("rs-alice")
             .with_grants(api.VideoGrants(room_join=True, room="rs-occupied")).to_jwt())
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{s.ws_url}/rtc?access_token={token}&protocol=15") as ws:
            await ws.receive(timeout=10)
            assert (await rooms_of(s.url))["rs-occupied"].num_participants == 1
            s.kill()
    s.start()
    restored = (await rooms_of(s.url)).get("rs-occupied")
    if restored is not None:
        assert restored.sid == room.sid and restored.num_participants == 0
    # empty_timeout (an hour from creation) would keep it; departure_timeout (1 s) closes it
    await wait_until_gone(s.url, "rs-occupied")


async def test_sigterm_is_graceful_and_keeps_rooms(server_factory) -> None:
    s = server_factory()
    room = await create(s.url, name="rs-term", empty_timeout=3600, metadata="kept")
    assert s.stop() == 0
    assert "server_stopped" in s.log_text()
    s.start()
    after = (await rooms_of(s.url))["rs-term"]
    assert (after.sid, after.metadata, after.creation_time) == (room.sid, "kept", room.creation_time)
    # and again: a second graceful stop of the restored server is clean too
    assert s.stop() == 0
