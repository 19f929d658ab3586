"""The official Node realtime SDK (`@livekit/rtc-node`, npm) joins, publishes and subscribes
through lkserver.

Media is checked by content: the spectral peak of the received tone (an FFT in the client), the
size of decoded frames. The SDK is the same Rust core as the Python SDK, driven from Node.
"""

from __future__ import annotations

import asyncio

import pytest
import rtcfix
from conftest import API_KEY, API_SECRET
from livekit import api
from rtcfix import token
from sdkclients import assert_tone, assert_video, events, node_client, short, wait_active

rtc_server = rtcfix.rtc_server  # the fixture: one realtime server per module


@pytest.mark.parametrize("mode", ["default", "off"])
async def test_node_publish_subscribe_audio_video_data_rpc_mute(rtc_server, mode):
    room = f"node-av-{mode}"
    sub = asyncio.ensure_future(node_client(
        rtc_server, token("sub", room), "--seconds", "10", "--single-pc", mode, "--rpc-method", "echo"))
    await wait_active(rtc_server, room, ["sub"])
    pub = await node_client(rtc_server, token("pub", room), "--seconds", "7", "--single-pc", mode,
                            "--publish-audio", "440", "--publish-video", "640x360", "--send-data", "hi",
                            "--call-rpc", "sub:echo:hello", "--wait-for", "sub", "--mute-after", "5")
    sub_r = await sub
    assert not pub["errors"] and not sub_r["errors"], (short(pub), short(sub_r))
    assert pub["sid"].startswith("PA_") and pub["audio_sid"].startswith("TR_AM")
    assert pub["video_sid"].startswith("TR_VC")
    assert "sub" in pub["remote_at_join"]
    assert_tone(sub_r, "pub", 440)
    assert_video(sub_r, "pub", "640x360")
    assert [d["data"] for d in sub_r["data"] if d["from"] == "pub" and d["topic"] == "t"] == \
        [f"hi-{i}" for i in range(10)]
    assert pub["rpc"] == "HELLO"
    assert [e["payload"] for e in events(sub_r, "rpc_invoked")] == ["hello"]
    assert events(pub, "muted_self"), pub["events"]
    assert [e["sid"] for e in events(sub_r, "track_muted") if e["identity"] == "pub"] == [pub["audio_sid"]]
    assert any(e["identities"] == ["pub"] for e in events(sub_r, "active_speakers")), "no speaker detection"
    assert any(e["identity"] == "pub" for e in events(sub_r, "participant_disconnected"))


async def test_node_remove_participant_and_api_mute(rtc_server):
    room = "node-admin"
    async with api.LiveKitAPI(rtc_server.url, API_KEY, API_SECRET) as lk:
        victim = asyncio.ensure_future(node_client(rtc_server, token("victim", room), "--seconds", "10",
                                                   "--publish-audio", "440"))
        watcher = asyncio.ensure_future(node_client(rtc_server, token("watcher", room), "--seconds", "10"))
        for _ in range(150):
            parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants
            if len(parts) == 2 and any(p.tracks for p in parts):
                break
            await asyncio.sleep(0.1)
        info = await lk.room.get_participant(api.RoomParticipantIdentity(room=room, identity="victim"))
        assert len(info.tracks) == 1, info
        await asyncio.sleep(1.5)  # some audio reaches the watcher first
        muted = await lk.room.mute_published_track(api.MuteRoomTrackRequest(
            room=room, identity="victim", track_sid=info.tracks[0].sid, muted=True))
        assert muted.track.muted
        await asyncio.sleep(0.5)
        await lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity="victim"))
        parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants
        assert [p.identity for p in parts] == ["watcher"]
        victim_r, watcher_r = await victim, await watcher
    assert [e["reason"] for e in events(victim_r, "disconnected")] == ["PARTICIPANT_REMOVED"], victim_r["events"]
    assert any(e["identity"] == "victim" for e in events(watcher_r, "track_muted")), watcher_r["events"]
    assert any(e["identity"] == "victim" for e in events(watcher_r, "participant_disconnected"))
    assert "victim" not in watcher_r["remote_final"]
    assert_tone(watcher_r, "victim", 440)


@pytest.mark.parametrize("scenario", ["signal-reconnect", "full-reconnect"])
async def test_node_reconnect(rtc_server, scenario):
    room = f"node-{scenario}"
    sub = asyncio.ensure_future(node_client(rtc_server, token("listener", room), "--seconds", "11"))
    await wait_active(rtc_server, room, ["listener"])
    pub = await node_client(rtc_server, token("talker", room), "--seconds", "8", "--publish-audio", "440",
                            "--simulate", scenario, "--simulate-after", "3")
    sub_r = await sub
    assert not pub["errors"], short(pub)
    assert events(pub, "simulated") and events(pub, "reconnected"), pub["events"]
    if scenario == "signal-reconnect":
        # a resume: same session, the others never see the talker leave
        assert pub["sid_final"] == pub["sid_before_simulate"] == pub["sid"]
        assert not any(e["identity"] == "talker" and e["t"] < 8 for e in events(sub_r, "participant_disconnected"))
    else:
        # a full reconnect: a new session that publishes its track again
        assert pub["sid_final"] != pub["sid"] and pub["sid_final"].startswith("PA_")
    assert pub["remote_final"] == ["listener"]
    # the tone reached the listener; after a full reconnect it came on the republished track too
    assert_tone(sub_r, "talker", 440)
    subscribed = {e["key"] for e in events(sub_r, "track_subscribed")}
    assert len(subscribed) == (1 if scenario == "signal-reconnect" else 2), sub_r["events"]
