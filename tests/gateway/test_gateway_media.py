"""Gateway tokens in the hands of the official Python SDK: a tenant's participant joins and
publishes with a token from POST /livekit/token; the tenant mutes its microphone through
POST /livekit/participant/mute (the client is told), another tenant cannot; the tenant removes it
through DELETE /livekit/participant (the client is disconnected).

Needs the test network namespace (scripts/in-netns.sh), as every official WebRTC client does.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
from livekit import api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "rtc"))

from gwfix import admin, call, gateway_section
from rtcfix import py_client, start_rtc_server


async def test_tenant_mutes_and_removes_its_sdk_participant(tmp_path) -> None:
    server = start_rtc_server(tmp_path / "data", gateway_section())
    try:
        base = f"{server.url}/livekit"
        async with aiohttp.ClientSession() as http:
            status, tok = await call(http, "POST", f"{base}/token", "acme",
                                     {"room_name": "media-room", "participant_identity": "speaker",
                                      "participant_name": "Speaker"})
            assert status == 200
            client = asyncio.ensure_future(py_client(server, tok["token"], "--publish-audio", "440",
                                                     "--seconds", "8"))
            track_sid = ""
            for _ in range(150):
                status, room = await call(http, "GET", f"{base}/rooms/media-room", "acme")
                async with admin(server) as lk:
                    people = (await lk.room.list_participants(
                        api.ListParticipantsRequest(room="media-room"))).participants
                if people and people[0].tracks:
                    track_sid = people[0].tracks[0].sid
                    break
                await asyncio.sleep(0.1)
            assert track_sid, "the SDK client never published"
            assert room["participants"][0]["is_publisher"] is True

            mute = {"room_name": "media-room", "participant_identity": "speaker", "track_sid": track_sid,
                    "muted": True}
            status, err = await call(http, "POST", f"{base}/participant/mute", "globex", mute)
            assert (status, err["code"]) == (404, "ROOM_NOT_FOUND")
            status, body = await call(http, "POST", f"{base}/participant/mute", "acme", mute)
            assert (status, body) == (200, {"room_name": "media-room", "participant_identity": "speaker",
                                            "track_sid": track_sid, "muted": True})
            status, err = await call(http, "POST", f"{base}/participant/mute", "acme", {**mute, "muted": False})
            assert (status, err["code"]) == (409, "FAILED_PRECONDITION")  # room.enable_remote_unmute is off
            await asyncio.sleep(1.0)
            status, body = await call(http, "DELETE", f"{base}/participant", "acme",
                                      {"room_name": "media-room", "participant_identity": "speaker"})
            assert status == 200
            report = await client
        assert not report["errors"], report
        assert any(e["event"] == "track_muted" for e in report["events"]), report["events"]
        assert any(e["event"] == "disconnected" for e in report["events"]), report["events"]
    finally:
        server.stop()
