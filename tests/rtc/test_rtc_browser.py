"""livekit-client (the official browser SDK, npm) in Debian's headless chromium joins, publishes
and subscribes through lkserver.

The fake camera captures 640x360; the fake microphone plays a WAV sine made at test time. Media
is checked by content in the subscribing page: decoded frames and their size from getStats
(inbound-rtp framesDecoded/frameWidth/frameHeight), the tone's frequency from a WebAudio
AnalyserNode on the remote track.
"""

from __future__ import annotations

import asyncio

import pytest
import rtcfix
from conftest import API_KEY, API_SECRET
from livekit import api
from rtcfix import token
from sdkclients import assert_tone, assert_video, browser_clients, events, short

rtc_server = rtcfix.rtc_server  # the fixture: one realtime server per module

# livekit-client's simulcast layers for a 640x360 camera; lkserver forwards the first layer that
# arrives until simulcast is negotiated (the next issue), which is the lowest one
SIMULCAST_SIZES = {"320x180", "640x360"}


@pytest.mark.parametrize("signalling", ["v1", "v0"])
async def test_browser_publish_subscribe_audio_video_data_rpc_mute(rtc_server, signalling):
    room = f"web-av-{signalling}"
    v0 = signalling == "v0"
    sub, pub = await browser_clients(rtc_server, [
        {"token": token("sub", room), "seconds": 11, "v0": v0, "rpcMethod": "echo"},
        {"token": token("pub", room), "seconds": 8, "room": room, "waitActive": ["sub"], "v0": v0, "publish": "av",
         "sendData": "hi", "callRpc": "sub:echo:hello", "waitFor": "sub", "muteAfter": 6},
    ], tone=440)
    assert not pub["errors"] and not sub["errors"], (short(pub), short(sub))
    # default options take the single-PC path; singlePeerConnection: false the two-PC one
    assert pub["websockets"] == sub["websockets"] == (["/rtc"] if v0 else ["/rtc/v1"])
    assert pub["sid"].startswith("PA_") and pub["audio_sid"].startswith("TR_AM")
    assert pub["video_sid"].startswith("TR_VC") and pub["camera"] == "640x360"
    assert_tone(sub, "pub", 440)
    assert_video(sub, "pub", "640x360")
    assert [d["data"] for d in sub["data"] if d["from"] == "pub" and d["topic"] == "t"] == \
        [f"hi-{i}" for i in range(10)]
    assert pub["rpc"] == "HELLO"
    assert [(e["caller"], e["payload"]) for e in events(sub, "rpc_invoked")] == [("pub", "hello")]
    assert events(pub, "muted_self"), pub["events"]
    assert [e["sid"] for e in events(sub, "track_muted") if e["identity"] == "pub"] == [pub["audio_sid"]]
    assert any(e["identities"] == ["pub"] for e in events(sub, "active_speakers")), "no speaker detection"
    assert any(e["identity"] == "pub" for e in events(sub, "participant_disconnected"))


@pytest.mark.parametrize("scenario", ["signal-reconnect", "full-reconnect"])
async def test_browser_reconnect_with_simulcast(rtc_server, scenario):
    """livekit-client's default simulcast publishing; a simulated signal loss resumes the
    session (ICE restart over the same PeerConnection), or rejoins with a new one."""
    room = f"web-{scenario}"
    sub, pub = await browser_clients(rtc_server, [
        {"token": token("sub", room), "seconds": 11},
        {"token": token("pub", room), "seconds": 8, "room": room, "waitActive": ["sub"], "publish": "av",
         "simulcast": True,
         "simulate": scenario, "simulateAfter": 2.5},
    ], tone=523)
    assert not pub["errors"] and not sub["errors"], (short(pub), short(sub))
    assert events(pub, "simulated") and events(pub, "reconnected"), pub["events"]
    if scenario == "signal-reconnect":
        assert pub["sid_final"] == pub["sid_before_simulate"] == pub["sid"], short(pub)
        assert not [e for e in events(sub, "participant_disconnected") if e["t"] < 9], sub["events"]
        assert len(events(sub, "track_subscribed")) == 2, sub["events"]
    else:
        assert pub["sid_final"] != pub["sid"], short(pub)
        assert len(events(sub, "track_subscribed")) == 4, sub["events"]
    assert_tone(sub, "pub", 523)
    # after a full reconnect the first video track has had about a second
    assert_video(sub, "pub", SIMULCAST_SIZES, min_frames=5)


async def test_browser_removed_by_the_api(rtc_server):
    room = "web-remove"

    async def remove_when_joined() -> None:
        async with api.LiveKitAPI(rtc_server.url, API_KEY, API_SECRET) as lk:
            for _ in range(200):
                parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants
                if len(parts) == 2 and any(p.tracks for p in parts):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            await lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity="victim"))

    remover = asyncio.ensure_future(remove_when_joined())
    victim, watcher = await browser_clients(rtc_server, [
        {"token": token("victim", room), "seconds": 7, "publish": "a"},
        {"token": token("watcher", room), "seconds": 7},
    ])
    await remover
    assert [e["reason"] for e in events(victim, "disconnected")] == ["PARTICIPANT_REMOVED"], victim["events"]
    assert victim["connection_state"] == "disconnected"
    assert any(e["identity"] == "victim" for e in events(watcher, "participant_disconnected")), watcher["events"]
    assert watcher["remote_final"] == []
