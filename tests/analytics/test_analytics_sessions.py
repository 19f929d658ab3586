"""Sessions made by official realtime clients, read back through the Analytics API and the CLI.

Two Python SDK participants join a room, publish camera and microphone to each other and leave;
one of them comes back (a new participant session); another room has one participant; then
both rooms are deleted. The API must return exactly those two sessions, with exactly those
participants, participant sessions (their `PA_` sids as the clients saw them), intervals inside
the times the clients ran, sources and media bytes. On the SQLite store and on Redis.

Needs the test network namespace (scripts/in-netns.sh), as every official WebRTC client does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from livekit import api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "rtc"))

from conftest import API_KEY, API_SECRET, ROOT
from rtcfix import py_client, start_rtc_server, token

REDIS_DB = 12


def parse_ts(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


def list_token() -> str:
    return api.AccessToken(API_KEY, API_SECRET).with_grants(api.VideoGrants(room_list=True)).to_jwt()


async def get(session: aiohttp.ClientSession, url: str, bearer: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with session.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.fixture(params=["sqlite", "redis"])
async def server(request, tmp_path):
    extra = ""
    if request.param == "redis":
        import redis.asyncio as aioredis

        redis_url = request.getfixturevalue("redis_url")
        host, port = redis_url.rsplit(":", 1)
        client = aioredis.Redis(host=host, port=int(port), db=REDIS_DB)
        await client.flushdb()
        await client.aclose()
        extra = f"redis:\n  address: {redis_url}\n  db: {REDIS_DB}\n"
    s = start_rtc_server(tmp_path / "data", extra)
    yield s
    s.stop()


async def test_sessions_of_official_clients(server) -> None:
    base = f"{server.url}/api/project/lkserver/sessions"
    async with api.LiveKitAPI(server.url, API_KEY, API_SECRET) as lk:
        standup = await lk.room.create_room(api.CreateRoomRequest(name="standup"))
        other = await lk.room.create_room(api.CreateRoomRequest(name="other"))
        t_start = time.time()
        alice, bob, carol = await asyncio.gather(
            py_client(server, token("alice", "standup", name="Alice"), "--publish-audio", "440",
                      "--publish-video", "320x240", "--seconds", "4", "--wait-for", "bob"),
            py_client(server, token("bob", "standup", name="Bob"), "--publish-audio", "660",
                      "--publish-video", "320x240", "--seconds", "4", "--wait-for", "alice"),
            py_client(server, token("carol", "other"), "--seconds", "1"),
        )
        t_first_round = time.time()
        await asyncio.sleep(0.5)
        alice_again = await py_client(server, token("alice", "standup", name="Alice"), "--seconds", "1")
        t_end = time.time()
        await asyncio.sleep(0.5)
        await lk.room.delete_room(api.DeleteRoomRequest(room="standup"))
        await lk.room.delete_room(api.DeleteRoomRequest(room="other"))
    for report in (alice, bob, carol, alice_again):
        assert not report["errors"], report
    assert alice["sid"] != alice_again["sid"]
    # they saw each other's media: the sessions below are of a real call
    assert any(k.startswith("bob/") for k in alice["audio"]) and any(k.startswith("bob/") for k in alice["video"])

    async with aiohttp.ClientSession() as http:
        status, body = await get(http, base, list_token())
        assert status == 200, body
        sessions = {s["sessionId"]: s for s in body["sessions"]}
        assert set(sessions) == {standup.sid, other.sid}
        s = sessions[standup.sid]
        assert s["roomName"] == "standup" and s["egress"] == 0
        assert (s["numParticipants"], s["numActiveParticipants"]) == (2, 0)
        assert t_start - 5 <= parse_ts(s["createdAt"]) <= t_start
        assert t_end <= parse_ts(s["endedAt"]) == parse_ts(s["lastActive"]) <= time.time()
        # 4 s of 320x240 video and opus each way, counted per stream by the SFU
        assert int(s["bandwidthIn"]) > 40_000 and int(s["bandwidthOut"]) > 40_000, s
        assert [x["sessionId"] for x in body["sessions"]] == \
            [x.sid for x in sorted((standup, other), key=lambda r: (r.creation_time_ms, r.sid), reverse=True)]

        status, d = await get(http, f"{base}/{standup.sid}", list_token())
        assert status == 200, d
        assert (d["roomId"], d["roomName"], d["numParticipants"]) == (standup.sid, "standup", 2)
        assert d["startTime"] == s["createdAt"] and d["endTime"] == s["endedAt"]
        assert int(d["bandwidth"]) == int(s["bandwidthIn"]) + int(s["bandwidthOut"])
        assert d["connectionMinutes"] == "3"  # three participant sessions, each under a minute
        by_identity = {p["participantIdentity"]: p for p in d["participants"]}
        assert set(by_identity) == {"alice", "bob"}
        both = {"cameraTrack": True, "microphoneTrack": True, "screenShareTrack": False,
                "screenShareAudio": False}
        a, b = by_identity["alice"], by_identity["bob"]
        assert a["publishedSources"] == both and b["publishedSources"] == both
        assert a["participantName"] == "Alice" and a["roomId"] == standup.sid
        assert [x["sessionId"] for x in a["sessions"]] == [alice["sid"], alice_again["sid"]]
        assert [x["participantId"] for x in a["sessions"]] == [alice["sid"], alice_again["sid"]]
        assert [x["sessionId"] for x in b["sessions"]] == [bob["sid"]]
        first, second = a["sessions"]
        for one, lo, hi in ((first, t_start, t_first_round), (second, t_first_round, t_end),
                            (b["sessions"][0], t_start, t_first_round)):
            joined, left = parse_ts(one["joinedAt"]), parse_ts(one["leftAt"])
            assert lo <= joined < left <= hi, (one, lo, hi)
        assert a["joinedAt"] == first["joinedAt"] and a["leftAt"] == second["leftAt"]

        status, d = await get(http, f"{base}/{other.sid}", list_token())
        assert [p["participantIdentity"] for p in d["participants"]] == ["carol"]
        assert d["participants"][0]["publishedSources"] == {k: False for k in both}
        assert [x["sessionId"] for x in d["participants"][0]["sessions"]] == [carol["sid"]]

        # date filters around the sessions' day (UTC), and the retention window
        day = dt.date.fromisoformat(s["createdAt"][:10])

        async def listed(**params: str) -> tuple[int, dict]:
            q = "&".join(f"{k}={v}" for k, v in params.items())
            return await get(http, f"{base}?{q}", list_token())

        assert {x["sessionId"] for x in (await listed(start=str(day), end=str(day)))[1]["sessions"]} == set(sessions)
        assert (await listed(end=str(day - dt.timedelta(days=1))))[1] == {"sessions": []}
        assert (await listed(start=str(day + dt.timedelta(days=1))))[1] == {"sessions": []}
        assert len((await listed(start=str(day - dt.timedelta(days=6))))[1]["sessions"]) == 2
        status, err = await listed(start=str(day - dt.timedelta(days=9)))
        assert status == 400 and err["code"] == "INVALID_ARGUMENT" and "within 7 days" in err["error"]
        status, page = await listed(limit="1", page="1")
        assert status == 200 and [x["sessionId"] for x in page["sessions"]] == [body["sessions"][1]["sessionId"]]

    # the CLI reads the same API
    await asyncio.to_thread(check_cli, server, standup.sid, other.sid)


def check_cli(server, standup_sid: str, other_sid: str) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lkserver", "--url", server.url, "--api-key", API_KEY,
                               "--api-secret", API_SECRET, "analytics", *args], capture_output=True,
                              text=True, cwd=str(ROOT), timeout=30, check=False,
                              env={**os.environ, "COLUMNS": "250"})

    listed_out = cli("sessions")
    assert listed_out.returncode == 0, listed_out.stderr
    assert "Session ID" in listed_out.stdout and "Bandwidth Out" in listed_out.stdout
    assert standup_sid in listed_out.stdout and other_sid in listed_out.stdout
    detail = cli("session", standup_sid)
    assert detail.returncode == 0, detail.stderr
    for column in ("Connection Minutes", "Identity", "Joined", "Left", "Region", "SDK", "alice", "bob"):
        assert column in detail.stdout, (column, detail.stdout)
    missing = cli("session", "RM_nope")
    assert missing.returncode == 1 and "404" in missing.stderr and "session not found" in missing.stderr
    as_json = cli("sessions", "--json", "--limit", "1")
    assert as_json.returncode == 0 and len(json.loads(as_json.stdout)["sessions"]) == 1
