"""Every RoomService RPC through the official Python server SDK (PyPI `livekit-api`, protobuf Twirp)."""

from __future__ import annotations

import pytest
from livekit import api

from conftest import API_KEY, API_SECRET


def raw_call(lk, method: str, req, response_class, room: str):
    """An RPC the official SDK has no method for (PerformRpc), through its own Twirp client."""
    headers = lk.room._auth_header(api.VideoGrants(room_admin=True, room=room))
    return lk.room._client.request("RoomService", method, req, headers, response_class)


@pytest.fixture
async def lk(server):
    client = api.LiveKitAPI(server.url, API_KEY, API_SECRET)
    yield client
    await client.aclose()


async def test_create_room_defaults_and_fields(lk):
    room = await lk.room.create_room(api.CreateRoomRequest(name="py-defaults"))
    assert room.name == "py-defaults"
    assert room.sid.startswith("RM_") and len(room.sid) == 15
    assert room.empty_timeout == 300 and room.departure_timeout == 20 and room.max_participants == 0
    assert room.creation_time > 1_700_000_000
    assert abs(room.creation_time_ms // 1000 - room.creation_time) <= 1
    assert len(room.turn_password) >= 40
    mimes = [c.mime for c in room.enabled_codecs]
    assert mimes == ["audio/PCMU", "audio/PCMA", "audio/opus", "audio/red", "video/VP8", "video/H264",
                     "video/VP9", "video/AV1", "video/H265", "video/rtx"]

    custom = await lk.room.create_room(api.CreateRoomRequest(
        name="py-custom", empty_timeout=60, departure_timeout=5, max_participants=7, metadata="m1"))
    assert (custom.empty_timeout, custom.departure_timeout, custom.max_participants, custom.metadata) == (
        60, 5, 7, "m1")


async def test_create_room_is_get_or_create(lk):
    first = await lk.room.create_room(api.CreateRoomRequest(name="py-idem", metadata="first"))
    again = await lk.room.create_room(api.CreateRoomRequest(name="py-idem", metadata="second", empty_timeout=9))
    assert again.sid == first.sid
    assert again.metadata == "first" and again.empty_timeout == 300


async def test_list_rooms_with_names_filter(lk):
    a = await lk.room.create_room(api.CreateRoomRequest(name="py-list-a"))
    b = await lk.room.create_room(api.CreateRoomRequest(name="py-list-b"))
    everything = await lk.room.list_rooms(api.ListRoomsRequest())
    assert {a.sid, b.sid} <= {r.sid for r in everything.rooms}
    only = await lk.room.list_rooms(api.ListRoomsRequest(names=["py-list-b", "no-such-room"]))
    assert [r.sid for r in only.rooms] == [b.sid]


async def test_delete_room(lk):
    await lk.room.create_room(api.CreateRoomRequest(name="py-del"))
    await lk.room.delete_room(api.DeleteRoomRequest(room="py-del"))
    rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=["py-del"]))
    assert list(rooms.rooms) == []
    with pytest.raises(api.TwirpError) as e:
        await lk.room.delete_room(api.DeleteRoomRequest(room="py-del"))
    assert (e.value.code, e.value.status) == ("not_found", 404)
    assert "requested room does not exist" in e.value.message


async def test_update_room_metadata(lk):
    await lk.room.create_room(api.CreateRoomRequest(name="py-meta", metadata="before"))
    room = await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="py-meta", metadata="after"))
    assert room.metadata == "after"
    listed = await lk.room.list_rooms(api.ListRoomsRequest(names=["py-meta"]))
    assert listed.rooms[0].metadata == "after"
    cleared = await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="py-meta", metadata=""))
    assert cleared.metadata == ""
    with pytest.raises(api.TwirpError) as e:
        await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="py-nope", metadata="x"))
    assert e.value.code == "not_found"


async def test_participant_rpcs_on_unknown_participants(lk):
    """LiveKit's answers when the room or participant is not there (reference server-api.md §3)."""
    await lk.room.create_room(api.CreateRoomRequest(name="py-parts"))
    res = await lk.room.list_participants(api.ListParticipantsRequest(room="py-parts"))
    assert list(res.participants) == []
    res = await lk.room.list_participants(api.ListParticipantsRequest(room="py-no-such-room"))
    assert list(res.participants) == []

    async def code_of(coro) -> tuple[str, int, str]:
        with pytest.raises(api.TwirpError) as e:
            await coro
        return e.value.code, e.value.status, e.value.message

    ident = api.RoomParticipantIdentity(room="py-parts", identity="ghost")
    assert (await code_of(lk.room.get_participant(ident)))[:2] == ("not_found", 404)
    assert (await code_of(lk.room.remove_participant(ident)))[:2] == ("not_found", 404)
    assert (await code_of(lk.room.update_participant(api.UpdateParticipantRequest(
        room="py-parts", identity="ghost", metadata="x"))))[:2] == ("not_found", 404)
    # RPCs LiveKit routes to the participant's node: nobody answers for a participant that is absent
    assert (await code_of(lk.room.mute_published_track(api.MuteRoomTrackRequest(
        room="py-parts", identity="ghost", track_sid="TR_x", muted=True))))[:2] == ("unavailable", 503)
    assert (await code_of(lk.room.update_subscriptions(api.UpdateSubscriptionsRequest(
        room="py-parts", identity="ghost", track_sids=["TR_x"], subscribe=True))))[:2] == ("unavailable", 503)
    assert (await code_of(raw_call(lk, "PerformRpc", api.PerformRpcRequest(
        room="py-parts", destination_identity="ghost", method="m", payload="p"),
        api.PerformRpcResponse, "py-parts")))[:2] == ("unavailable", 503)
    code = await code_of(raw_call(lk, "PerformRpc", api.PerformRpcRequest(room="py-parts", method="m"),
                                  api.PerformRpcResponse, "py-parts"))
    assert code[:2] == ("invalid_argument", 400) and "destination identity is required" in code[2]
    assert (await code_of(lk.room.move_participant(api.MoveParticipantRequest(
        room="py-parts", identity="ghost", destination_room="py-other"))))[:2] == ("unavailable", 503)
    code = await code_of(lk.room.forward_participant(api.ForwardParticipantRequest(
        room="py-parts", identity="ghost", destination_room="py-parts")))
    assert code[:2] == ("invalid_argument", 400)
    assert "destination room cannot be the same as source room" in code[2]
    # SendData to a live room with nobody in it succeeds; to an absent room nobody answers
    await lk.room.send_data(api.SendDataRequest(room="py-parts", data=b"hello", topic="t"))
    assert (await code_of(lk.room.send_data(api.SendDataRequest(room="py-no-room", data=b"x"))))[:2] == (
        "unavailable", 503)


async def test_validation_errors(lk):
    with pytest.raises(api.TwirpError) as e:
        await lk.room.create_room(api.CreateRoomRequest(name="x" * 257))
    assert e.value.code == "invalid_argument" and "room name length exceeds limits" in e.value.message
    with pytest.raises(api.TwirpError) as e:
        await lk.room.create_room(api.CreateRoomRequest(name="py-big", metadata="m" * (512 * 1024 + 1)))
    assert e.value.code == "invalid_argument"
    assert e.value.message == "metadata size exceeds limits 524288"
    assert e.value.metadata == {"argument": "metadata size exceeds limits"}
    with pytest.raises(api.TwirpError) as e:
        await lk.room.create_room(api.CreateRoomRequest(name=""))
    assert e.value.code == "invalid_argument"
    with pytest.raises(api.TwirpError) as e:
        await lk.room.create_room(api.CreateRoomRequest(name="py-preset", room_preset="nope"))
    assert e.value.code == "invalid_argument"
    assert "unknown room configuration" in e.value.message
    # SendData's nonce: empty or 16 bytes (the SDK always sets 16; send a bad one by hand)
    await lk.room.create_room(api.CreateRoomRequest(name="py-nonce"))
    bad = api.SendDataRequest(room="py-nonce", data=b"x", nonce=b"123")
    with pytest.raises(api.TwirpError) as e:
        await raw_call(lk, "SendData", bad, api.SendDataResponse, "py-nonce")
    assert e.value.message == "nonce should be 16-bytes or not present, got: 3 bytes"

