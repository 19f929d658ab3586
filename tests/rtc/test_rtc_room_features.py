"""Room features with the official Python realtime SDK: moves, permissions, subscriptions, ICE-TCP.

Each test checks what a user sees: who receives which tone, which events the SDK raises.
"""

from __future__ import annotations

import asyncio

from livekit import api

from conftest import API_KEY, API_SECRET
from rtcfix import events, py_client, rtc_server, token  # noqa: F401


def tone_from(report: dict, publisher: str) -> dict | None:
    for key, a in report["audio"].items():
        if key.startswith(publisher + "/"):
            return a
    return None


async def wait_for(lk: api.LiveKitAPI, room: str, identities: set[str], with_tracks: set[str] = frozenset()) -> None:
    for _ in range(150):
        parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants
        present = {p.identity for p in parts if p.state == api.ParticipantInfo.ACTIVE}
        publishing = {p.identity for p in parts if p.tracks}
        if identities <= present and set(with_tracks) <= publishing:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{identities} not active in {room}")


async def test_move_participant_takes_its_tracks_along(rtc_server):
    async with api.LiveKitAPI(rtc_server.url, API_KEY, API_SECRET) as lk:
        mover = asyncio.ensure_future(py_client(rtc_server, token("mover", "py-move-a"), "--seconds", "9",
                                                "--publish-audio", "440"))
        stays = asyncio.ensure_future(py_client(rtc_server, token("stays", "py-move-a"), "--seconds", "9"))
        waits = asyncio.ensure_future(py_client(rtc_server, token("waits", "py-move-b"), "--seconds", "9"))
        await wait_for(lk, "py-move-a", {"mover", "stays"}, {"mover"})
        await wait_for(lk, "py-move-b", {"waits"})
        await asyncio.sleep(2.0)
        req = api.MoveParticipantRequest(room="py-move-a", identity="mover", destination_room="py-move-b")
        headers = lk.room._auth_header(api.VideoGrants(room_admin=True, room="py-move-a", destination_room="py-move-b"))
        await lk.room._client.request("RoomService", "MoveParticipant", req, headers, api.MoveParticipantResponse)
        a = (await lk.room.list_participants(api.ListParticipantsRequest(room="py-move-a"))).participants
        b = (await lk.room.list_participants(api.ListParticipantsRequest(room="py-move-b"))).participants
        assert {p.identity for p in a} == {"stays"}
        assert {p.identity for p in b} == {"waits", "mover"}
        mover_r, stays_r, waits_r = await mover, await stays, await waits
    assert events(mover_r, "moved") and mover_r["room_final"] == "py-move-b", mover_r["events"]
    assert any(e["identity"] == "mover" for e in events(stays_r, "participant_disconnected"))
    assert any(e["identity"] == "mover" for e in events(waits_r, "participant_connected"))
    heard = tone_from(waits_r, "mover")
    assert heard and abs(heard["peak_hz"] - 440) < 5, waits_r["audio"]


async def test_update_participant_revokes_and_restores_rights(rtc_server):
    room = "py-revoke"
    async with api.LiveKitAPI(rtc_server.url, API_KEY, API_SECRET) as lk:
        speaker = asyncio.ensure_future(py_client(rtc_server, token("speaker", room), "--seconds", "10",
                                                  "--publish-audio", "440"))
        listener = asyncio.ensure_future(py_client(rtc_server, token("listener", room), "--seconds", "10"))
        await wait_for(lk, room, {"speaker", "listener"}, {"speaker"})
        await asyncio.sleep(1.0)
        info = await lk.room.update_participant(api.UpdateParticipantRequest(
            room=room, identity="speaker",
            permission=api.ParticipantPermission(can_publish=False, can_subscribe=True, can_publish_data=True)))
        assert not info.permission.can_publish
        speaker_info = await lk.room.get_participant(api.RoomParticipantIdentity(room=room, identity="speaker"))
        assert list(speaker_info.tracks) == []
        # the listener loses its right to subscribe: nothing left to receive either way
        await lk.room.update_participant(api.UpdateParticipantRequest(
            room=room, identity="listener",
            permission=api.ParticipantPermission(can_publish=True, can_subscribe=False, can_publish_data=True)))
        speaker_r, listener_r = await speaker, await listener
    assert events(listener_r, "track_unpublished"), listener_r["events"]
    assert events(listener_r, "track_unsubscribed"), listener_r["events"]


async def test_subscription_permissions_and_manual_subscription(rtc_server):
    room = "py-subperm"
    owner = asyncio.ensure_future(py_client(rtc_server, token("owner", room), "--seconds", "9",
                                            "--publish-audio", "440", "--allow-only", "friend"))
    await asyncio.sleep(1.0)
    friend = asyncio.ensure_future(py_client(rtc_server, token("friend", room), "--seconds", "6"))
    stranger = asyncio.ensure_future(py_client(rtc_server, token("stranger", room), "--seconds", "6"))
    manual = asyncio.ensure_future(py_client(rtc_server, token("manual", room), "--seconds", "6",
                                             "--no-auto-subscribe"))
    friend_r, stranger_r, manual_r = await friend, await stranger, await manual
    await owner
    assert tone_from(friend_r, "owner"), friend_r
    assert not tone_from(stranger_r, "owner"), stranger_r["audio"]
    assert not tone_from(manual_r, "owner"), manual_r["audio"]


async def test_manual_subscribe_and_api_update_subscriptions(rtc_server):
    room = "py-manual"
    async with api.LiveKitAPI(rtc_server.url, API_KEY, API_SECRET) as lk:
        pub = asyncio.ensure_future(py_client(rtc_server, token("src", room), "--seconds", "10",
                                              "--publish-audio", "550"))
        manual = asyncio.ensure_future(py_client(rtc_server, token("picky", room), "--seconds", "8",
                                                 "--no-auto-subscribe", "--subscribe-after", "2"))
        api_driven = asyncio.ensure_future(py_client(rtc_server, token("driven", room), "--seconds", "8",
                                                     "--no-auto-subscribe"))
        await wait_for(lk, room, {"src", "picky", "driven"}, {"src"})
        src = await lk.room.get_participant(api.RoomParticipantIdentity(room=room, identity="src"))
        await lk.room.update_subscriptions(api.UpdateSubscriptionsRequest(
            room=room, identity="driven", track_sids=[src.tracks[0].sid], subscribe=True))
        manual_r, driven_r = await manual, await api_driven
        await pub
    for r in (manual_r, driven_r):
        heard = tone_from(r, "src")
        assert heard and abs(heard["peak_hz"] - 550) < 5, r["audio"]


async def test_ice_over_tcp_after_force_tcp(rtc_server):
    """The SDK's force-tcp drill asks for TCP candidates and reconnects; media then flows over ICE-TCP."""
    room = "py-tcp"
    listener = asyncio.ensure_future(py_client(rtc_server, token("tcp-listener", room), "--seconds", "12"))
    await asyncio.sleep(1.0)
    talker = await py_client(rtc_server, token("tcp-talker", room), "--seconds", "9", "--publish-audio", "440",
                             "--simulate", "force-tcp", "--simulate-after", "1.5")
    listener_r = await listener
    assert not talker["errors"], talker["errors"]
    heard = tone_from(listener_r, "tcp-talker")
    assert heard and abs(heard["peak_hz"] - 440) < 5, listener_r["audio"]
    selected = [ln for ln in rtc_server.log_text().splitlines() if "ice_selected" in ln and "tcp-talker/" in ln]
    assert any("protocol=tcp" in ln for ln in selected), selected
