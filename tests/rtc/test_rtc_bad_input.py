"""Bad input on the signalling endpoints never hurts anyone but its sender.

Raw aiohttp WebSocket clients send malformed frames, garbage SDP, huge frames, requests they have
no right to make, and undecodable join requests to /rtc and /rtc/v1, while two official Python
SDK clients in the same room keep talking (a 440 Hz tone). Each bad connection gets a clear
answer (an HTTP status before the upgrade, a RequestResponse, or a LeaveRequest and a clean
close) or has the bad frame skipped; the tone keeps flowing and the server stays healthy.

The tests of this module share one server and one talking pair, and run in file order: the
last test collects the pair's reports.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import pytest
import rtcfix
from conftest import API_KEY, API_SECRET, ROOT, ServerProcess
from google.protobuf.json_format import Parse
from livekit import api
from livekit.protocol import models as pm
from livekit.protocol import rtc as pr
from rtcfix import token
from sdkclients import assert_tone, events

rtc_server = rtcfix.rtc_server  # the fixture: one realtime server per module

ROOM = "bad-input"
TALK_SECONDS = 20  # longer than every other test of this module together


class Pair:
    """An official Python SDK talker (440 Hz) and listener, as subprocesses spanning the module."""

    def __init__(self, server: ServerProcess) -> None:
        def start(identity: str, *args: str) -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, str(rtcfix.PY_CLIENT), server.ws_url, token(identity, ROOM), *args],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))

        self.listener = start("listener", "--seconds", str(TALK_SECONDS + 4))
        self.talker = start("talker", "--seconds", str(TALK_SECONDS), "--publish-audio", "440",
                            "--wait-for", "listener")
        self.started = time.monotonic()

    @staticmethod
    def report(proc: subprocess.Popen, timeout: float) -> dict:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        assert proc.returncode == 0 and lines, f"python client failed ({proc.returncode}):\n{err[-3000:]}"
        return json.loads(lines[-1])

    def stop(self) -> None:
        for p in (self.talker, self.listener):
            if p.poll() is None:
                p.kill()
                p.communicate()


@pytest.fixture(scope="module")
def pair(rtc_server: ServerProcess) -> Iterator[Pair]:
    p = Pair(rtc_server)
    yield p
    p.stop()


async def wait_talking(server: ServerProcess) -> None:
    """Until the talker has published its track (so bad input lands in a live room)."""
    async with api.LiveKitAPI(server.url, API_KEY, API_SECRET) as lk:
        for _ in range(300):
            try:
                parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=ROOM))).participants
            except api.TwirpError:
                parts = []
            if any(p.identity == "talker" and p.tracks for p in parts):
                return
            await asyncio.sleep(0.1)
    raise AssertionError("the talker never published")


async def identities_in_room(server: ServerProcess) -> list[str]:
    async with api.LiveKitAPI(server.url, API_KEY, API_SECRET) as lk:
        parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=ROOM))).participants
    return sorted(p.identity for p in parts)


# -- raw signalling clients ----------------------------------------------------------------------

def v0_url(server: ServerProcess, tok: str) -> str:
    return f"{server.url}/rtc?access_token={tok}&protocol=16&sdk=python&auto_subscribe=1"


def v1_url(server: ServerProcess, tok: str, join_request: bytes | str | None = None) -> str:
    if join_request is None:
        join_request = pr.JoinRequest(client_info=pm.ClientInfo(sdk=pm.ClientInfo.SDK.PYTHON, protocol=16),
                                      connection_settings=pr.ConnectionSettings(auto_subscribe=True))
        join_request = pr.WrappedJoinRequest(join_request=join_request.SerializeToString()).SerializeToString()
    if isinstance(join_request, bytes):
        join_request = base64.urlsafe_b64encode(join_request).decode().rstrip("=")
    return f"{server.url}/rtc/v1?access_token={tok}&join_request={join_request}"


async def receive(ws: aiohttp.ClientWebSocketResponse, seconds: float = 1.5) -> list:
    """Signal responses (decoded) until `seconds` of quiet, or a close (as ("close", code))."""
    got: list = []
    while True:
        one = await receive_one(ws, seconds)
        got += one
        if not one or isinstance(one[-1], tuple):
            return got


def kinds(got: list) -> list[str]:
    return [g[0] if isinstance(g, tuple) else g.WhichOneof("message") for g in got]


async def joined(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url, max_msg_size=0)
    first = await receive(ws, 1.0)
    assert kinds(first)[:1] == ["join"], kinds(first)
    return ws


async def until(ws: aiohttp.ClientWebSocketResponse, kind: str, seconds: float = 5.0) -> list:
    """Signal responses up to and including the first of `kind` (or a close, or `seconds`)."""
    got: list = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        got += await receive_one(ws, left)
        if not got or isinstance(got[-1], tuple) or got[-1].WhichOneof("message") == kind:
            break
    return got


async def receive_one(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list:
    try:
        msg = await ws.receive(timeout=seconds)
    except TimeoutError:
        return []
    if msg.type == aiohttp.WSMsgType.BINARY:
        return [pr.SignalResponse.FromString(msg.data)]
    if msg.type == aiohttp.WSMsgType.TEXT:
        return [Parse(msg.data, pr.SignalResponse(), ignore_unknown_fields=True)]
    return [("close", ws.close_code)]


async def still_answers(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """The connection still works: a ping_req gets its pong_resp."""
    await ws.send_bytes(pr.SignalRequest(ping_req=pr.Ping(timestamp=4242)).SerializeToString())
    got = await until(ws, "pong_resp")
    return bool(got) and not isinstance(got[-1], tuple) and got[-1].pong_resp.last_ping_timestamp == 4242


# -- the tests -----------------------------------------------------------------------------------

async def test_room_is_talking(rtc_server, pair):
    await wait_talking(rtc_server)


async def test_token_without_room_join_is_refused_before_upgrade(rtc_server, pair):
    no_join = api.AccessToken(API_KEY, API_SECRET).with_identity("intruder").with_grants(
        api.VideoGrants(room_list=True, room=ROOM)).to_jwt()
    async with aiohttp.ClientSession() as s:
        for url in (v0_url(rtc_server, no_join), v1_url(rtc_server, no_join)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await s.ws_connect(url)
            assert e.value.status == 401, url
        for path in ("/rtc/validate", "/rtc/v1/validate"):
            async with s.get(f"{rtc_server.url}{path}?access_token={no_join}") as r:
                assert r.status == 401 and "permission" in (await r.text())
        # a forged signature too
        forged = token("intruder", ROOM)[:-4] + "AAAA"
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(v0_url(rtc_server, forged))
        assert e.value.status == 401
    assert "intruder" not in await identities_in_room(rtc_server)


@pytest.mark.parametrize("join_request", [
    "!!!not-base64!!!",
    base64.urlsafe_b64encode(b"\xff\xff\xff\xff").decode(),
    pr.WrappedJoinRequest(join_request=b"\x0a\xff\xff\xff").SerializeToString(),
    pr.WrappedJoinRequest(compression=pr.WrappedJoinRequest.Compression.GZIP,
                          join_request=b"not gzip at all").SerializeToString(),
    pr.WrappedJoinRequest(compression=pr.WrappedJoinRequest.Compression.GZIP,
                          join_request=gzip.compress(b"\x12\xff\xff")).SerializeToString(),
    "",
], ids=["not-base64", "not-protobuf", "inner-not-protobuf", "not-gzip", "gzip-of-garbage", "empty"])
async def test_undecodable_join_request_is_400_on_v1(rtc_server, pair, join_request):
    tok = token("garbled", ROOM)
    url = v1_url(rtc_server, tok, join_request)
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(url)
        assert e.value.status == 400
        async with s.get(url.replace("/rtc/v1?", "/rtc/v1/validate?")) as r:
            assert r.status == 400 and re.search("join.request", await r.text())


@pytest.mark.parametrize("path", ["v0", "v1"])
async def test_malformed_signal_frames_are_skipped(rtc_server, pair, path):
    """An undecodable frame is dropped (and logged); the connection goes on."""
    bad_utf8 = pr.SignalRequest(offer=pr.SessionDescription(type="offer", sdp="Z")).SerializeToString()
    frames = [
        b"\x0a\xff\xff\xff\xff",             # length-delimited field running past the end
        b"\xff\xff\xff",                     # truncated varint tag
        bad_utf8.replace(b"Z", b"\xff"),     # a proto3 string that is not UTF-8
        bytes(range(256)) * 8,               # noise
    ]
    identity = f"garbler-{path}"
    url = v0_url(rtc_server, token(identity, ROOM)) if path == "v0" else v1_url(rtc_server, token(identity, ROOM))
    async with aiohttp.ClientSession() as s:
        ws = await joined(s, url)
        for frame in frames:
            await ws.send_bytes(frame)
            assert await still_answers(ws), frame[:16]
        for text in ("{not json", '{"offer": 5}', "\u0000"):
            await ws.send_str(text)
            assert await still_answers(ws), text
        assert identity in await identities_in_room(rtc_server)
        await ws.close()


@pytest.mark.parametrize("sdp", [
    "garbage",
    "v=0\r\n\x00\xff",
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio\r\n",
    ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
     "a=rtpmap:abc opus/48000\r\na=extmap:x urn:y\r\na=ssrc:z cname:w\r\na=sendonly\r\n"),
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n" * 3000,
], ids=["not-sdp", "binary", "bad-m-line", "bad-attributes", "too-large"])
async def test_garbage_sdp_offer_closes_that_connection(rtc_server, pair, sdp):
    """LiveKit's answer to an offer it cannot negotiate: a LeaveRequest and a clean close."""
    async with aiohttp.ClientSession() as s:
        ws = await joined(s, v0_url(rtc_server, token("sdp-fuzzer", ROOM)))
        await ws.send_bytes(pr.SignalRequest(offer=pr.SessionDescription(type="offer", sdp=sdp, id=1)).SerializeToString())
        got = await receive(ws, 3.0)
        assert kinds(got)[-2:] == ["leave", "close"], kinds(got)
        leave = got[-2].leave
        assert leave.action == pr.LeaveRequest.Action.DISCONNECT and not leave.can_reconnect, leave
        assert got[-1] == ("close", 1000)
    assert "sdp-fuzzer" not in await identities_in_room(rtc_server)


async def test_garbage_sdp_in_the_v1_join_request(rtc_server, pair):
    join = pr.JoinRequest(client_info=pm.ClientInfo(sdk=pm.ClientInfo.SDK.PYTHON, protocol=16),
                          publisher_offer=pr.SessionDescription(type="offer", sdp="not an sdp", id=1))
    wrapped = pr.WrappedJoinRequest(join_request=join.SerializeToString()).SerializeToString()
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(v1_url(rtc_server, token("v1-fuzzer", ROOM), wrapped))
        got = await receive(ws, 3.0)
    assert kinds(got)[0] == "join" and kinds(got)[-2:] == ["leave", "close"], kinds(got)
    assert got[-1] == ("close", 1000)
    assert "v1-fuzzer" not in await identities_in_room(rtc_server)


async def test_huge_frame_closes_that_connection(rtc_server, pair):
    """A frame over the 1 MiB signal limit: close 1009 (message too big) for that connection."""
    async with aiohttp.ClientSession() as s:
        ws = await joined(s, v0_url(rtc_server, token("flooder", ROOM)))
        await ws.send_bytes(b"\x0a" + b"\x00" * ((1 << 20) + 1024))
        got = await receive(ws, 3.0)
        assert got and got[-1] == ("close", aiohttp.WSCloseCode.MESSAGE_TOO_BIG), kinds(got)


async def test_publishing_without_can_publish_is_refused(rtc_server, pair):
    async with aiohttp.ClientSession() as s:
        ws = await joined(s, v0_url(rtc_server, token("mute-by-token", ROOM, can_publish=False)))
        for source, kind in ((pm.TrackSource.MICROPHONE, pm.TrackType.AUDIO), (pm.TrackSource.CAMERA, pm.TrackType.VIDEO)):
            await ws.send_bytes(pr.SignalRequest(add_track=pr.AddTrackRequest(
                cid=f"c-{kind}", name="x", type=kind, source=source)).SerializeToString())
            got = [r for r in await until(ws, "request_response") if not isinstance(r, tuple)]
            assert "track_published" not in kinds(got), got
            [refusal] = [r.request_response for r in got if r.WhichOneof("message") == "request_response"]
            assert refusal.reason == pr.RequestResponse.Reason.NOT_ALLOWED, refusal
            assert "permission to publish" in refusal.message and refusal.add_track.cid == f"c-{kind}"
        assert await still_answers(ws)
        await ws.close()
    async with api.LiveKitAPI(rtc_server.url, API_KEY, API_SECRET) as lk:
        parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=ROOM))).participants
    assert not [p for p in parts if p.identity == "mute-by-token" and p.tracks]


async def test_requests_that_make_no_sense_are_harmless(rtc_server, pair):
    nonsense = [
        pr.SignalRequest(),
        pr.SignalRequest(answer=pr.SessionDescription(type="answer", sdp="v=0\r\n", id=77)),
        pr.SignalRequest(trickle=pr.TrickleRequest(candidateInit="not json", target=pr.SignalTarget.PUBLISHER)),
        pr.SignalRequest(trickle=pr.TrickleRequest(candidateInit='{"candidate": 5}', target=pr.SignalTarget.SUBSCRIBER)),
        pr.SignalRequest(trickle=pr.TrickleRequest(candidateInit='{"candidate": "candidate:1 1 udp x"}')),
        pr.SignalRequest(mute=pr.MuteTrackRequest(sid="TR_nope", muted=True)),
        pr.SignalRequest(subscription=pr.UpdateSubscription(track_sids=["TR_nope"], subscribe=True)),
        pr.SignalRequest(track_setting=pr.UpdateTrackSettings(track_sids=["TR_nope"], width=1 << 30)),
        pr.SignalRequest(sync_state=pr.SyncState(answer=pr.SessionDescription(type="answer", sdp="junk"))),
    ]
    async with aiohttp.ClientSession() as s:
        ws = await joined(s, v0_url(rtc_server, token("confused", ROOM)))
        for req in nonsense:
            await ws.send_bytes(req.SerializeToString())
            assert await still_answers(ws), req
        await ws.close()


async def test_the_room_was_unaffected_and_the_server_is_healthy(rtc_server, pair):
    elapsed = time.monotonic() - pair.started
    assert elapsed < TALK_SECONDS, f"the bad-input tests outlasted the talking pair ({elapsed:.1f}s)"
    # both still in the room after all that
    assert {"talker", "listener"} <= set(await identities_in_room(rtc_server))
    talker = Pair.report(pair.talker, TALK_SECONDS + 30)
    listener = Pair.report(pair.listener, 30)
    assert not talker["errors"] and not listener["errors"], (talker, listener)
    assert_tone(listener, "talker", 440)
    # the listener heard the talker throughout: never lost it, never reconnected
    assert not events(listener, "reconnecting") and not events(talker, "reconnecting")
    assert len(events(listener, "track_subscribed")) == 1, listener["events"]
    # the server: validate still works, RoomService answers, nothing crashed on the way
    validate = f"{rtc_server.url}/rtc/validate?access_token={token('late', ROOM)}"
    async with aiohttp.ClientSession() as s, s.get(validate) as r:
        assert r.status == 200 and await r.text() == "success"
    log = rtc_server.log_text()
    # each bad connection was logged clearly, and nothing crashed
    assert "bad_signal_frame identity=garbler-v0" in log and "bad_offer identity=sdp-fuzzer" in log
    assert "Traceback" not in log and "signal_handler_failed" not in log and "Error handling request" not in log
    assert rtc_server.proc is not None and rtc_server.proc.poll() is None
