"""Egress operations on a real server: LiveKit's errors for bad requests, events to a
per-request webhook, room close, a worker killed mid-recording, CPU admission, session limits,
and auto egress from CreateRoom."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import API_KEY, API_SECRET
from egressfix import (  # noqa: F401
    Publisher,
    S,
    eg_server,
    lkapi,
    probe,
    start_egress_server,
    wait_status,
    wall_seconds,
)
from livekit import api

PREFIX = "twirp error unknown: "


async def twirp_error(coro) -> api.TwirpError:
    with pytest.raises(api.TwirpError) as e:
        await coro
    return e.value


async def test_bad_requests_answer_livekit_errors(eg_server):
    E = api.EncodedFileOutput
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="bad"))
        rc = lk.egress.start_room_composite_egress
        cases = [
            (rc(api.RoomCompositeEgressRequest(room_name="nope", file_outputs=[E()])),
             "not_found", "requested room does not exist"),
            (rc(api.RoomCompositeEgressRequest(room_name="bad")),
             "invalid_argument", "request has missing or invalid field: output"),
            (rc(api.RoomCompositeEgressRequest(room_name="bad", audio_only=True, video_only=True, file_outputs=[E()])),
             "invalid_argument", "request has missing or invalid field: audio_only and video_only"),
            (rc(api.RoomCompositeEgressRequest(room_name="bad", file_outputs=[E(), E()])),
             "invalid_argument", "request has missing or invalid field: multiple file outputs"),
            (rc(api.RoomCompositeEgressRequest(room_name="bad", advanced=api.EncodingOptions(width=641),
                                               file_outputs=[E()])),
             "invalid_argument", "request has missing or invalid field: width"),
            (rc(api.RoomCompositeEgressRequest(room_name="bad", preset=api.EncodingOptionsPreset.PASSTHROUGH,
                                               file_outputs=[E()])),
             "invalid_argument", "request has missing or invalid field: preset"),
            (rc(api.RoomCompositeEgressRequest(room_name="bad", stream_outputs=[api.StreamOutput(
                urls=["rtmp://host/x"])])),
             "invalid_argument",
             "invalid url rtmp://host/x: rtmp urls must be of format rtmp(s)://{host}(/{path})/{app}/{stream_key}( live=1)"),
            (rc(api.RoomCompositeEgressRequest(room_name="bad", stream_outputs=[api.StreamOutput(
                urls=["http://host/a/b"])])),
             "invalid_argument", "invalid url http://host/a/b: invalid protocol"),
            (rc(api.RoomCompositeEgressRequest(room_name="bad", segment_outputs=[api.SegmentedFileOutput(
                playlist_name="a/p.m3u8", live_playlist_name="b/l.m3u8")])),
             "invalid_argument",
             "request has missing or invalid field: live_playlist_name must be in same directory as playlist_name"),
            (rc(api.RoomCompositeEgressRequest(room_name="bad", audio_only=True,
                                               image_outputs=[api.ImageOutput(capture_interval=1)])),
             "invalid_argument", "request has missing or invalid field: audio_only images"),
            (lk.egress.start_participant_egress(api.ParticipantEgressRequest(room_name="bad", file_outputs=[E()])),
             "invalid_argument", "request has missing or invalid field: identity"),
            (lk.egress.start_track_composite_egress(api.TrackCompositeEgressRequest(room_name="bad",
                                                                                   file_outputs=[E()])),
             "invalid_argument", "request has missing or invalid field: audio_track_id or video_track_id"),
            (lk.egress.start_track_egress(api.TrackEgressRequest(room_name="bad", file=api.DirectFileOutput())),
             "invalid_argument", "request has missing or invalid field: track_id"),
            (lk.egress.start_track_egress(api.TrackEgressRequest(room_name="bad", track_id="TR_nope",
                                                                 file=api.DirectFileOutput())),
             "not_found", "track TR_nope not found"),
            (lk.egress.start_web_egress(api.WebEgressRequest(url="ftp://example.com", file_outputs=[E()])),
             "invalid_argument", "request has missing or invalid field: web url"),
            (lk.egress.start_egress(api.StartEgressRequest(room_name="bad", outputs=[api.Output(file=api.FileOutput())])),
             "invalid_argument", "request has missing or invalid field: source"),
            (lk.egress.list_egress(api.ListEgressRequest(egress_id="EG_nope")),
             "not_found", "egress does not exist"),
            (lk.egress.stop_egress(api.StopEgressRequest(egress_id="EG_nope")),
             "not_found", "egress does not exist"),
        ]
        cases.append((lk.room.create_room(api.CreateRoomRequest(name="auto-bad", egress=api.RoomEgress(
            room=api.RoomCompositeEgressRequest()))), "invalid_argument", "request has missing or invalid field: output"))
        for coro, code, msg in cases:
            e = await twirp_error(coro)
            assert (e.code, e.message) == (code, PREFIX + msg), (code, msg)
        assert (await lk.egress.list_egress(api.ListEgressRequest(room_name="bad"))).items == []
        # a file egress: UpdateStream refused; once ended, Stop and UpdateStream are preconditions
        info = await rc(api.RoomCompositeEgressRequest(room_name="bad", file_outputs=[E(filepath="bad/x.mp4")]))
        e = await twirp_error(lk.egress.update_stream(api.UpdateStreamRequest(egress_id=info.egress_id,
                                                                              add_output_urls=["rtmp://h/a/k"])))
        assert (e.code, e.message) == ("invalid_argument", PREFIX + "UpdateStream called on non-streaming egress")
        await wait_status(lk, info.egress_id, (S.EGRESS_ACTIVE,))
        await lk.egress.stop_egress(api.StopEgressRequest(egress_id=info.egress_id))
        await wait_status(lk, info.egress_id, (S.EGRESS_COMPLETE,))
        e = await twirp_error(lk.egress.stop_egress(api.StopEgressRequest(egress_id=info.egress_id)))
        assert (e.code, e.message) == ("failed_precondition",
                                       PREFIX + "egress with status EGRESS_COMPLETE cannot be stopped")
        # stopped before it could start (nobody called ghost publishes): ABORTED, 412
        ghost = await lk.egress.start_participant_egress(api.ParticipantEgressRequest(
            room_name="bad", identity="ghost", file_outputs=[E(filepath="bad/ghost.mp4")]))
        await asyncio.sleep(0.5)
        aborted = await lk.egress.stop_egress(api.StopEgressRequest(egress_id=ghost.egress_id))
        assert aborted.status == S.EGRESS_ABORTED
        aborted = await wait_status(lk, ghost.egress_id, (S.EGRESS_ABORTED, S.EGRESS_COMPLETE, S.EGRESS_FAILED))
        assert (aborted.status, aborted.error, aborted.error_code) == (
            S.EGRESS_ABORTED, "Stop called before pipeline could start", 412)
        for _ in range(50):
            if (await lk.egress.list_egress(api.ListEgressRequest(room_name="bad", active=True))).items == []:
                break
            await asyncio.sleep(0.1)
        assert not (await lk.egress.list_egress(api.ListEgressRequest(room_name="bad", active=True))).items
    # every method needs roomRecord
    tok = api.AccessToken(API_KEY, API_SECRET).with_grants(api.VideoGrants(room_create=True, room_admin=True)).to_jwt()
    async with aiohttp.ClientSession() as http:
        for method in ("StartRoomCompositeEgress", "ListEgress", "StopEgress", "UpdateLayout", "UpdateStream",
                       "StartEgress", "StartWebEgress", "StartParticipantEgress", "StartTrackCompositeEgress",
                       "StartTrackEgress"):
            async with http.post(f"{eg_server.url}/twirp/livekit.Egress/{method}", json={},
                                 headers={"Authorization": f"Bearer {tok}"}) as r:
                assert r.status == 401 and (await r.json()) == {"code": "unauthenticated", "msg": "permissions denied"}


async def test_events_room_close_and_list(eg_server):
    received: list[api.WebhookEvent] = []
    receiver = api.WebhookReceiver(api.TokenVerifier(API_KEY, API_SECRET))

    async def hook(request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        received.append(receiver.receive(body, request.headers.get("Authorization", "")))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with lkapi(eg_server) as lk:
            room = await lk.room.create_room(api.CreateRoomRequest(name="ev-room"))
            async with Publisher(eg_server, "ev-room", "jill", "--audio", "440"):
                info = await lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
                    room_name="ev-room", audio_only=True,
                    file_outputs=[api.EncodedFileOutput(filepath="ev/{room_id}")],
                    webhooks=[api.WebhookConfig(url=f"http://127.0.0.1:{port}/hook", signing_key=API_KEY)]))
                assert info.room_id == room.sid
                await wait_status(lk, info.egress_id, (S.EGRESS_ACTIVE,))
                listed = await lk.egress.list_egress(api.ListEgressRequest(room_name="ev-room", active=True))
                assert [i.egress_id for i in listed.items] == [info.egress_id]
                await asyncio.sleep(2)
                await lk.room.delete_room(api.DeleteRoomRequest(room="ev-room"))  # the room closes: egress ends
                done = await wait_status(lk, info.egress_id, (S.EGRESS_COMPLETE, S.EGRESS_FAILED))
            assert done.status == S.EGRESS_COMPLETE and done.details == "End reason: Source closed", done
            assert done.file_results[0].filename == f"ev/{room.sid}.ogg"
            p = probe(done.file_results[0].location)
            assert abs(p.peak_hz - 440) < 5
            assert (await lk.egress.list_egress(api.ListEgressRequest(room_name="ev-room", active=True))).items == []
            everything = await lk.egress.list_egress(api.ListEgressRequest())
            assert info.egress_id in [i.egress_id for i in everything.items]
        for _ in range(100):
            if any(e.event == "egress_ended" for e in received):
                break
            await asyncio.sleep(0.1)
    finally:
        await runner.cleanup()
    mine = [e for e in received if e.egress_info.egress_id == info.egress_id]
    assert [(e.event, S.Name(e.egress_info.status)) for e in mine] == [
        ("egress_started", "EGRESS_STARTING"), ("egress_updated", "EGRESS_ACTIVE"),
        ("egress_updated", "EGRESS_ENDING"), ("egress_ended", "EGRESS_COMPLETE")]
    assert all(e.room.name == "ev-room" and e.room.sid == room.sid for e in mine)


def worker_pid(egress_id: str) -> int:
    """The worker process recording an egress (it names itself after the egress id)."""
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and Path(f"/proc/{pid}/comm").read_text().strip() == egress_id:
                return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no worker process for {egress_id}")


async def test_worker_killed_mid_recording_fails_only_that_egress(eg_server):
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="kill-room"))
        async with Publisher(eg_server, "kill-room", "kim", "--audio", "440", "--video", "320x240"):
            a = await lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
                room_name="kill-room", file_outputs=[api.EncodedFileOutput(filepath="kill/a.mp4")]))
            await wait_status(lk, a.egress_id, (S.EGRESS_ACTIVE,))
            b = await lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
                room_name="kill-room", audio_only=True, file_outputs=[api.EncodedFileOutput(filepath="kill/b")]))
            await wait_status(lk, b.egress_id, (S.EGRESS_ACTIVE,))
            pid = worker_pid(a.egress_id)
            await asyncio.sleep(1)
            os.kill(pid, signal.SIGKILL)
            failed = await wait_status(lk, a.egress_id, (S.EGRESS_FAILED, S.EGRESS_COMPLETE))
            await asyncio.sleep(1.5)
            await lk.egress.stop_egress(api.StopEgressRequest(egress_id=b.egress_id))
            other = await wait_status(lk, b.egress_id, (S.EGRESS_COMPLETE, S.EGRESS_FAILED))
            rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=["kill-room"]))
    assert failed.status == S.EGRESS_FAILED, failed
    assert failed.error == "egress worker process died (signal SIGKILL)" and failed.error_code == 500
    assert failed.details == "End reason: Process killed"
    assert other.status == S.EGRESS_COMPLETE, other
    assert abs(probe(other.file_results[0].location).peak_hz - 440) < 5
    assert [r.name for r in rooms.rooms] == ["kill-room"]


async def test_admission_limit_and_auto_egress(tmp_path):
    server = start_egress_server(tmp_path, """  cpu_capacity: 1.0
  cpu_cost: {room_composite_cpu_cost: 0.6, audio_room_composite_cpu_cost: 0.1, participant_cpu_cost: 0.1,
             track_cpu_cost: 0.05}
  session_limits: {file_output_max_duration: 2}""")
    try:
        async with lkapi(server) as lk:
            await lk.room.create_room(api.CreateRoomRequest(name="full"))
            first = await lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
                room_name="full", file_outputs=[api.EncodedFileOutput(filepath="full/a.mp4")]))
            e = await twirp_error(lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
                room_name="full", file_outputs=[api.EncodedFileOutput(filepath="full/b.mp4")])))
            assert e.code == "resource_exhausted" and e.status == 429
            assert e.message == PREFIX + "not enough CPU: this egress needs 0.60 cores, 0.60 of 1.00 are reserved"
            # the session limit ends the first one: LIMIT_REACHED, with its file finished
            limited = await wait_status(lk, first.egress_id, (S.EGRESS_LIMIT_REACHED, S.EGRESS_COMPLETE,
                                                              S.EGRESS_FAILED), timeout=20)
            for _ in range(50):
                limited = (await lk.egress.list_egress(api.ListEgressRequest(egress_id=first.egress_id))).items[0]
                if limited.ended_at and limited.file_results[0].size:
                    break
                await asyncio.sleep(0.1)
            assert limited.status == S.EGRESS_LIMIT_REACHED, limited
            assert (limited.error, limited.error_code) == ("Session limit reached", 413)
            assert limited.details == "End reason: Session limit reached"
            f = limited.file_results[0]
            assert abs(probe(f.location).duration - 2.0) < 0.5

            # auto egress: a room composite at creation, a participant egress at first publish, a track
            # egress per track
            await lk.room.create_room(api.CreateRoomRequest(name="auto", egress=api.RoomEgress(
                room=api.RoomCompositeEgressRequest(audio_only=True,
                                                    file_outputs=[api.EncodedFileOutput(filepath="auto/room")]),
                participant=api.AutoParticipantEgress(file_outputs=[api.EncodedFileOutput(filepath="auto/p/")]),
                tracks=api.AutoTrackEgress(filepath="auto/t/"))))
            started = (await lk.egress.list_egress(api.ListEgressRequest(room_name="auto"))).items
            assert [i.WhichOneof("request") for i in started] == ["room_composite"]
            assert started[0].room_composite.room_name == "auto"
            async with Publisher(server, "auto", "leo", "--audio", "440"):
                for _ in range(100):
                    items = (await lk.egress.list_egress(api.ListEgressRequest(room_name="auto"))).items
                    if len(items) == 3:
                        break
                    await asyncio.sleep(0.1)
                kinds = sorted(i.WhichOneof("request") for i in items)
                assert kinds == ["participant", "room_composite", "track"], items
                await asyncio.sleep(1.5)
            items = (await lk.egress.list_egress(api.ListEgressRequest(room_name="auto"))).items
            track = next(i for i in items if i.WhichOneof("request") == "track")
            assert track.track.file.filepath == "auto/t/"
            assert track.file_results[0].filename.startswith(f"auto/t/{track.track.track_id}-")
            assert track.file_results[0].filename.endswith(".ogg")
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_records_survive_restarts(tmp_path, redis_url, backend):
    """SIGTERM finishes running egresses (COMPLETE, files kept); after SIGKILL the restarted server
    marks what was running FAILED. Both store backends keep the records."""
    top = f"redis: {{address: '{redis_url}'}}" if backend == "redis" else ""
    server = start_egress_server(tmp_path / backend, top=top)
    try:
        async with lkapi(server) as lk:
            await lk.room.create_room(api.CreateRoomRequest(name=f"restart-{backend}", empty_timeout=600))
            a = await lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
                room_name=f"restart-{backend}", audio_only=True,
                file_outputs=[api.EncodedFileOutput(filepath="restart/a")]))
            await wait_status(lk, a.egress_id, (S.EGRESS_ACTIVE,))
            await asyncio.sleep(1.5)
        assert server.stop() == 0
        server.start()
        async with lkapi(server) as lk:
            done = (await lk.egress.list_egress(api.ListEgressRequest(egress_id=a.egress_id))).items[0]
            assert done.status == S.EGRESS_COMPLETE and done.details == "End reason: Source closed", done
            assert done.file_results[0].size > 0 and done.file_results[0].duration > 1e9
            b = await lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
                room_name=f"restart-{backend}", audio_only=True,
                file_outputs=[api.EncodedFileOutput(filepath="restart/b")]))
            await wait_status(lk, b.egress_id, (S.EGRESS_ACTIVE,))
        server.kill()
        server.start()
        async with lkapi(server) as lk:
            lost = (await lk.egress.list_egress(api.ListEgressRequest(egress_id=b.egress_id))).items[0]
            everything = await lk.egress.list_egress(api.ListEgressRequest(room_name=f"restart-{backend}"))
        assert lost.status == S.EGRESS_FAILED and lost.error == "egress ended by a server restart", lost
        assert [i.egress_id for i in everything.items] == [a.egress_id, b.egress_id]
    finally:
        server.stop()


async def test_room_is_recording_while_an_egress_is_active(eg_server):
    from rtcfix import py_client, token

    room = "rec-flag"
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=room))
        async with Publisher(eg_server, room, "tone", "--audio", "440"):
            viewer = asyncio.ensure_future(py_client(eg_server, token("viewer", room), "--seconds", "10",
                                                     "--no-auto-subscribe"))
            await asyncio.sleep(2.0)
            info = await lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
                room_name=room, audio_only=True, file_outputs=[api.EncodedFileOutput(filepath="rec/flag")]))
            await wait_status(lk, info.egress_id, (S.EGRESS_ACTIVE,))
            listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
            assert listed.rooms[0].active_recording
            await asyncio.sleep(2.0)
            await lk.egress.stop_egress(api.StopEgressRequest(egress_id=info.egress_id))
            await wait_status(lk, info.egress_id, (S.EGRESS_COMPLETE,))
            listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
            assert not listed.rooms[0].active_recording
            report = await viewer
    # the participant's SDK saw the room start and stop recording (RoomUpdate)
    assert [e["recording"] for e in report["events"] if e["event"] == "room_updated"] == [True, False], report
