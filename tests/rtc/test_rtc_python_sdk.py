"""The official Python realtime SDK (`livekit` on PyPI) joins, publishes and subscribes through lkserver.

Media is checked by content: the FFT peak of the received tone, the size of decoded frames.
"""

from __future__ import annotations

import asyncio

import pytest
from livekit import api

from conftest import API_KEY, API_SECRET
from rtcfix import events, py_client, rtc_server, rtc_server_factory, token  # noqa: F401


def assert_tone(report: dict, publisher: str, hz: float) -> None:
    tones = {k: v for k, v in report["audio"].items() if k.startswith(publisher + "/")}
    assert tones, f"no audio from {publisher}: {report}"
    for key, a in tones.items():
        assert a["samples"] > 48000, (key, a)
        assert abs(a["peak_hz"] - hz) < 5, (key, a)


def assert_video(report: dict, publisher: str, size: str, min_frames: int = 20) -> None:
    videos = {k: v for k, v in report["video"].items() if k.startswith(publisher + "/")}
    assert videos, f"no video from {publisher}: {report}"
    for key, v in videos.items():
        assert v["frames"] >= min_frames, (key, v)
        assert max(v["sizes"], key=v["sizes"].get) == size, (key, v)


@pytest.mark.parametrize("mode", ["default", "off"])
async def test_publish_subscribe_audio_video_data_rpc(rtc_server, mode):
    room = f"py-av-{mode}"
    sub = asyncio.ensure_future(py_client(
        rtc_server, token("sub", room), "--seconds", "9", "--single-pc", mode, "--rpc-method", "echo"))
    await asyncio.sleep(1.5)
    pub = await py_client(rtc_server, token("pub", room), "--seconds", "6", "--single-pc", mode,
                          "--publish-audio", "440", "--publish-video", "640x360", "--send-data", "hi",
                          "--call-rpc", "sub:echo:hello", "--wait-for", "sub")
    sub_r = await sub
    assert not pub["errors"] and not sub_r["errors"], (pub, sub_r)
    assert pub["sid"].startswith("PA_") and pub["audio_sid"].startswith("TR_AM")
    assert pub["video_sid"].startswith("TR_VC")
    assert_tone(sub_r, "pub", 440)
    assert_video(sub_r, "pub", "640x360")
    assert [d["data"] for d in sub_r["data"] if d["from"] == "pub"] == [f"hi-{i}" for i in range(10)]
    assert pub["rpc"] == "HELLO"
    assert [e["payload"] for e in events(sub_r, "rpc_invoked")] == ["hello"]
    assert any(e["identities"] == ["pub"] for e in events(sub_r, "active_speakers")), "no speaker detection"
    assert pub["connect_ms"] < 2000


async def test_v0_publisher_and_v1_subscriber_meet(rtc_server):
    room = "py-mixed"
    sub = asyncio.ensure_future(py_client(rtc_server, token("sub1", room), "--seconds", "8", "--single-pc", "on"))
    await asyncio.sleep(1.0)
    pub = await py_client(rtc_server, token("pub0", room), "--seconds", "5", "--single-pc", "off",
                          "--publish-audio", "523")
    sub_r = await sub
    assert not pub["errors"], pub
    assert_tone(sub_r, "pub0", 523)


async def test_late_joiner_gets_existing_tracks(rtc_server):
    room = "py-late"
    pub = asyncio.ensure_future(py_client(rtc_server, token("early", room), "--seconds", "9",
                                          "--publish-audio", "660"))
    await asyncio.sleep(3.0)
    late = await py_client(rtc_server, token("late", room), "--seconds", "4")
    await pub
    assert "early" in late["remote_at_join"]
    assert_tone(late, "early", 660)


async def test_room_service_acts_on_real_participants(rtc_server):
    room = "py-admin"
    async with api.LiveKitAPI(rtc_server.url, API_KEY, API_SECRET) as lk:
        pub = asyncio.ensure_future(py_client(rtc_server, token("alice", room, name="Alice"), "--seconds", "10",
                                              "--publish-audio", "440"))
        watcher = asyncio.ensure_future(py_client(rtc_server, token("bob", room), "--seconds", "10"))
        for _ in range(100):
            parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants
            if len(parts) == 2 and all(p.state == api.ParticipantInfo.ACTIVE for p in parts) \
                    and any(p.tracks for p in parts):
                break
            await asyncio.sleep(0.1)
        alice = await lk.room.get_participant(api.RoomParticipantIdentity(room=room, identity="alice"))
        assert alice.name == "Alice" and alice.sid.startswith("PA_") and len(alice.tracks) == 1
        track_sid = alice.tracks[0].sid
        rooms = (await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms
        assert rooms[0].num_participants == 2 and rooms[0].num_publishers == 1

        updated = await lk.room.update_participant(api.UpdateParticipantRequest(
            room=room, identity="alice", metadata="from-api", attributes={"k": "v"}))
        assert updated.metadata == "from-api" and updated.attributes["k"] == "v"

        muted = await lk.room.mute_published_track(api.MuteRoomTrackRequest(
            room=room, identity="alice", track_sid=track_sid, muted=True))
        assert muted.track.sid == track_sid and muted.track.muted
        with pytest.raises(api.TwirpError) as e:
            await lk.room.mute_published_track(api.MuteRoomTrackRequest(
                room=room, identity="alice", track_sid=track_sid, muted=False))
        assert e.value.code == "failed_precondition" and "remote unmute not enabled" in e.value.message
        unknown = await lk.room.mute_published_track(api.MuteRoomTrackRequest(
            room=room, identity="alice", track_sid="TR_nope", muted=True))
        assert not unknown.HasField("track")

        await lk.room.send_data(api.SendDataRequest(room=room, data=b"from-api", topic="api",
                                                    destination_identities=["bob"]))
        await asyncio.sleep(0.5)
        await lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity="alice"))
        parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants
        assert [p.identity for p in parts] == ["bob"]
        alice_r, bob_r = await pub, await watcher
    assert any(e["identity"] == "alice" and e["metadata"] == "from-api" for e in events(bob_r, "metadata_changed"))
    assert events(bob_r, "track_muted"), bob_r["events"]
    assert [d for d in bob_r["data"] if d["data"] == "from-api" and d["topic"] == "api"]
    assert events(alice_r, "disconnected"), alice_r["events"]
    assert any(e["identity"] == "alice" for e in events(bob_r, "participant_disconnected"))


async def test_resume_after_signal_reconnect(rtc_server):
    room = "py-resume"
    sub = asyncio.ensure_future(py_client(rtc_server, token("listener", room), "--seconds", "10"))
    await asyncio.sleep(1.0)
    pub = await py_client(rtc_server, token("talker", room), "--seconds", "7", "--publish-audio", "440",
                          "--simulate", "signal-reconnect", "--simulate-after", "2")
    sub_r = await sub
    assert not pub["errors"], pub
    assert events(pub, "reconnected"), pub["events"]
    assert pub["sid_final"] == pub["sid_before_simulate"] == pub["sid"]
    assert not any(e["identity"] == "talker" for e in events(sub_r, "participant_disconnected")
                   if e["t"] < 6), sub_r["events"]
    assert_tone(sub_r, "talker", 440)


async def test_duplicate_identity_replaces_first_session(rtc_server):
    room = "py-dup"
    first = asyncio.ensure_future(py_client(rtc_server, token("same", room), "--seconds", "6"))
    await asyncio.sleep(2.0)
    second = await py_client(rtc_server, token("same", room), "--seconds", "2")
    first_r = await first
    assert events(first_r, "disconnected"), first_r["events"]
    assert second["sid"] != first_r["sid"]


async def test_permissions_from_the_token(rtc_server):
    room = "py-perms"
    listener = asyncio.ensure_future(py_client(rtc_server, token("ears", room), "--seconds", "7"))
    await asyncio.sleep(1.0)
    muted = await py_client(rtc_server, token("mime", room, can_publish=False, can_publish_data=False),
                            "--seconds", "3", "--publish-audio", "440", "--send-data", "nope")
    r = await listener
    assert not [k for k in r["audio"] if k.startswith("mime/")], r
    assert not [d for d in r["data"] if d["from"] == "mime"], r
    assert any("publish audio" in e for e in muted["errors"]), muted


async def test_max_participants_and_bad_tokens(rtc_server):
    async with api.LiveKitAPI(rtc_server.url, API_KEY, API_SECRET) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="py-full", max_participants=1))
    first = asyncio.ensure_future(py_client(rtc_server, token("one", "py-full"), "--seconds", "4"))
    await asyncio.sleep(1.5)
    second = await py_client(rtc_server, token("two", "py-full"), "--seconds", "1")
    await first
    assert second["errors"], second
    no_join = api.AccessToken(API_KEY, API_SECRET).with_identity("x").with_grants(
        api.VideoGrants(room_list=True)).to_jwt()
    r = await py_client(rtc_server, no_join, "--seconds", "1")
    assert r["errors"], r
