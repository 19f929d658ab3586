"""Every RoomService method of `lkserver.api` against a running lkserver (the `server` fixture).

The answers are LiveKit's (reference server-api.md §3); what ours creates the official SDK reads
back, and the other way round.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import re
from pathlib import Path

import livekit.api as official
import pytest
from conftest import API_KEY, API_SECRET
from google.protobuf.json_format import MessageToJson

from lkserver import api


@pytest.fixture
async def lk(server):
    client = api.LiveKitAPI(server.url, API_KEY, API_SECRET)
    yield client
    await client.aclose()


@pytest.fixture
async def their_lk(server):
    client = official.LiveKitAPI(server.url, API_KEY, API_SECRET)
    yield client
    await client.aclose()


async def error_of(coro) -> api.ServerError:
    with pytest.raises(api.ServerError) as e:
        await coro
    return e.value


async def test_create_list_delete(lk, their_lk) -> None:
    room = await lk.room.create_room(api.CreateRoomRequest(
        name="sdk-crud", empty_timeout=60, departure_timeout=5, max_participants=7, metadata="m1"))
    assert room.name == "sdk-crud" and room.sid.startswith("RM_")
    assert (room.empty_timeout, room.departure_timeout, room.max_participants, room.metadata) == (60, 5, 7, "m1")
    again = await lk.room.create_room(api.CreateRoomRequest(name="sdk-crud", metadata="other"))
    assert again.sid == room.sid and again.metadata == "m1"  # get-or-create

    theirs = await their_lk.room.list_rooms(official.ListRoomsRequest(names=["sdk-crud"]))
    assert [r.sid for r in theirs.rooms] == [room.sid]
    ours = await lk.room.list_rooms(api.ListRoomsRequest())
    assert room.sid in {r.sid for r in ours.rooms}
    only = await lk.room.list_rooms(api.ListRoomsRequest(names=["sdk-crud", "sdk-no-such-room"]))
    assert [r.name for r in only.rooms] == ["sdk-crud"]

    assert isinstance(await lk.room.delete_room(api.DeleteRoomRequest(room="sdk-crud")), api.DeleteRoomResponse)
    assert list((await their_lk.room.list_rooms(official.ListRoomsRequest(names=["sdk-crud"]))).rooms) == []
    err = await error_of(lk.room.delete_room(api.DeleteRoomRequest(room="sdk-crud")))
    assert (err.code, err.status) == ("not_found", 404) and "requested room does not exist" in err.message


async def test_update_room_metadata(lk, their_lk) -> None:
    await their_lk.room.create_room(official.CreateRoomRequest(name="sdk-meta", metadata="before"))
    room = await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="sdk-meta", metadata="after"))
    assert room.metadata == "after"
    listed = await their_lk.room.list_rooms(official.ListRoomsRequest(names=["sdk-meta"]))
    assert listed.rooms[0].metadata == "after"
    err = await error_of(lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="sdk-nope", metadata="x")))
    assert err.code == api.ServerErrorCode.NOT_FOUND


async def test_participant_methods(lk) -> None:
    """No participant can join yet, so these meet LiveKit's answers for absent ones."""
    await lk.room.create_room(api.CreateRoomRequest(name="sdk-parts"))
    res = await lk.room.list_participants(api.ListParticipantsRequest(room="sdk-parts"))
    assert isinstance(res, api.ListParticipantsResponse) and list(res.participants) == []

    ident = api.RoomParticipantIdentity(room="sdk-parts", identity="ghost")
    for coro in (lk.room.get_participant(ident), lk.room.remove_participant(ident),
                 lk.room.update_participant(api.UpdateParticipantRequest(
                     room="sdk-parts", identity="ghost", metadata="x", attributes={"a": "b"}))):
        err = await error_of(coro)
        assert (err.code, err.status) == ("not_found", 404)
    for coro in (
        lk.room.mute_published_track(api.MuteRoomTrackRequest(room="sdk-parts", identity="ghost",
                                                              track_sid="TR_x", muted=True)),
        lk.room.update_subscriptions(api.UpdateSubscriptionsRequest(room="sdk-parts", identity="ghost",
                                                                    track_sids=["TR_x"], subscribe=True)),
        lk.room.perform_rpc(api.PerformRpcRequest(room="sdk-parts", destination_identity="ghost",
                                                  method="m", payload="p")),
        lk.room.move_participant(api.MoveParticipantRequest(room="sdk-parts", identity="ghost",
                                                            destination_room="sdk-other")),
        lk.room.send_data(api.SendDataRequest(room="sdk-absent-room", data=b"x")),
    ):
        err = await error_of(coro)
        assert (err.code, err.status) == ("unavailable", 503)
    err = await error_of(lk.room.perform_rpc(api.PerformRpcRequest(room="sdk-parts", method="m")))
    assert err.code == "invalid_argument" and "destination identity is required" in err.message
    err = await error_of(lk.room.forward_participant(api.ForwardParticipantRequest(
        room="sdk-parts", identity="ghost", destination_room="sdk-parts")))
    assert err.code == "invalid_argument"
    assert "destination room cannot be the same as source room" in err.message
    # SendData to a live room with nobody in it is accepted (with the SDK's 16-byte nonce)
    assert isinstance(await lk.room.send_data(api.SendDataRequest(room="sdk-parts", data=b"hi", topic="t")),
                      api.SendDataResponse)


async def test_validation_errors_carry_metadata(lk) -> None:
    err = await error_of(lk.room.create_room(api.CreateRoomRequest(name="sdk-big", metadata="m" * (512 * 1024 + 1))))
    assert err.code == "invalid_argument" and err.status == 400
    assert err.message == "metadata size exceeds limits 524288"
    assert err.metadata == {"argument": "metadata size exceeds limits"}


async def test_auth_failures_are_clear(server) -> None:
    async with api.LiveKitAPI(server.url, API_KEY, "not-the-secret") as bad:
        err = await error_of(bad.room.list_rooms(api.ListRoomsRequest()))
    assert (err.code, err.status) == ("unauthenticated", 401)
    assert err.message == "invalid authorization token: Signature verification failed"

    async with api.LiveKitAPI(server.url, "APIunknown", API_SECRET) as bad:
        err = await error_of(bad.room.list_rooms(api.ListRoomsRequest()))
    assert (err.code, err.status, err.message) == ("unauthenticated", 401, "invalid API key")

    expired = (api.AccessToken(API_KEY, API_SECRET).with_grants(api.VideoGrants(room_list=True))
               .with_ttl(datetime.timedelta(minutes=-10)).to_jwt())
    async with api.LiveKitAPI.with_token(expired, server.url) as bad:
        err = await error_of(bad.room.list_rooms(api.ListRoomsRequest()))
    assert err.status == 401 and err.message == "invalid authorization token: Signature has expired"

    # a valid token without the grant the RPC needs
    lister = api.AccessToken(API_KEY, API_SECRET).with_grants(api.VideoGrants(room_list=True)).to_jwt()
    async with api.LiveKitAPI.with_token(lister, server.url) as lk:
        assert isinstance(await lk.room.list_rooms(api.ListRoomsRequest()), api.ListRoomsResponse)
        err = await error_of(lk.room.create_room(api.CreateRoomRequest(name="sdk-denied")))
    assert (err.code, err.status, err.message) == ("unauthenticated", 401, "permissions denied")


async def test_official_token_drives_our_client(server) -> None:
    """A token minted by the official SDK, sent by ours: one format on both sides."""
    token = official.AccessToken(API_KEY, API_SECRET).with_grants(
        official.VideoGrants(room_create=True, room_list=True)).to_jwt()
    async with api.LiveKitAPI.with_token(token, server.url) as lk:
        room = await lk.room.create_room(api.CreateRoomRequest(name="sdk-official-token"))
        listed = await lk.room.list_rooms(api.ListRoomsRequest(names=["sdk-official-token"]))
        await lk.room.delete_room(api.DeleteRoomRequest(room="sdk-official-token"))
    assert [r.sid for r in listed.rooms] == [room.sid]


def readme_examples() -> list[str]:
    """The python blocks of the README's SDK section."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("## Python server SDK (`lkserver.api`)", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_readme_examples_run(server, capsys: pytest.CaptureFixture[str]) -> None:
    """Mint a join token, list rooms, verify a webhook: the README's code, as written."""
    blocks = readme_examples()
    assert len(blocks) == 3
    token_block, rooms_block, webhook_block = blocks

    ns: dict = {}
    exec(token_block, ns)  # noqa: S102 - our own README
    assert official.TokenVerifier("devkey", "secret").verify(ns["token"]).identity == "alice"

    exec(rooms_block.replace("http://127.0.0.1:7880", server.url), {})  # noqa: S102
    printed = capsys.readouterr().out
    assert "rooms:" in printed and "'my-room'" in printed

    ns = {}
    exec(webhook_block, ns)  # noqa: S102
    asyncio.run(post_webhooks(ns["app"]))
    printed = capsys.readouterr().out
    assert "room_started my-room alice" in printed


async def post_webhooks(app) -> None:
    from aiohttp import ClientSession, web

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/livekit-webhook"
    body = MessageToJson(api.WebhookEvent(event="room_started", room=api.Room(name="my-room"),
                                          participant=api.ParticipantInfo(identity="alice")), indent=None)
    auth = (official.AccessToken("devkey", "secret")
            .with_sha256(base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()).to_jwt())
    try:
        async with ClientSession() as http:
            async with http.post(url, data=body, headers={"Authorization": auth}) as r:
                assert r.status == 200
            async with http.post(url, data=body.replace("alice", "bob"), headers={"Authorization": auth}) as r:
                assert r.status == 401
            async with http.post(url, data=body, headers={"Authorization": "garbage"}) as r:
                assert r.status == 401
    finally:
        await runner.cleanup()
