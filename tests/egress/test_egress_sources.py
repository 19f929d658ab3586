"""Participant, track composite and track egress from official clients' tracks.

Track egress never transcodes: Opus lands in .ogg, VP8 in .webm, H.264 in .mp4, each with the
publisher's own packets; or the audio goes as raw PCM to a websocket.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
from aiohttp import web
from egressfix import Publisher, S, eg_server, lkapi, probe, wait_status, wall_seconds  # noqa: F401
from livekit import api


async def run_egress(lk, start, seconds: float) -> api.EgressInfo:
    info = await start
    await wait_status(lk, info.egress_id, (S.EGRESS_ACTIVE,))
    await asyncio.sleep(seconds)
    await lk.egress.stop_egress(api.StopEgressRequest(egress_id=info.egress_id))
    return await wait_status(lk, info.egress_id, (S.EGRESS_COMPLETE, S.EGRESS_FAILED, S.EGRESS_ABORTED))


async def test_participant_egress(eg_server):
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="pe-room"))
        async with Publisher(eg_server, "pe-room", "other", "--audio", "300"), \
                Publisher(eg_server, "pe-room", "frank", "--audio", "520", "--video", "640x360"):
            done = await run_egress(lk, lk.egress.start_participant_egress(api.ParticipantEgressRequest(
                room_name="pe-room", identity="frank",
                advanced=api.EncodingOptions(width=640, height=360, framerate=30, video_bitrate=1000,
                                             key_frame_interval=1),
                file_outputs=[api.EncodedFileOutput(filepath="pe/{room_name}")])), 3.5)
    assert done.status == S.EGRESS_COMPLETE, done
    f = done.file_results[0]
    assert f.filename == "pe/pe-room.mp4"
    p = probe(f.location)
    assert p.streams == {"video": "h264", "audio": "aac"} and (p.width, p.height) == (640, 360)
    assert abs(p.peak_hz - 520) < 5  # frank's tone, not the other participant's
    assert abs(p.duration - wall_seconds(f.started_at, f.ended_at)) < 0.5, (p, f)
    import av

    with av.open(f.location) as c:
        keys = [float(pk.pts * pk.time_base) for pk in c.demux(video=0) if pk.is_keyframe and pk.pts is not None]
    gaps = [b - a for a, b in zip(keys, keys[1:])]
    assert len(keys) >= 3 and all(abs(g - 1.0) < 0.05 for g in gaps), keys  # key_frame_interval=1


async def test_track_composite_egress(eg_server):
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="tc-room"))
        async with Publisher(eg_server, "tc-room", "gina", "--audio", "350", "--video", "640x360") as pub:
            done = await run_egress(lk, lk.egress.start_track_composite_egress(api.TrackCompositeEgressRequest(
                room_name="tc-room", audio_track_id=pub.info["audio_sid"], video_track_id=pub.info["video_sid"],
                preset=api.EncodingOptionsPreset.H264_720P_30,
                file_outputs=[api.EncodedFileOutput(filepath="tc/out.mp4")])), 3)
    assert done.status == S.EGRESS_COMPLETE, done
    f = done.file_results[0]
    p = probe(f.location)
    assert p.streams == {"video": "h264", "audio": "aac"} and (p.width, p.height) == (1280, 720)
    assert abs(p.peak_hz - 350) < 5
    assert abs(p.duration - wall_seconds(f.started_at, f.ended_at)) < 0.5, (p, f)
    manifest = json.loads(open(done.manifest_location).read())
    assert manifest["audio_track_id"] == pub.info["audio_sid"] and manifest["video_track_id"] == pub.info["video_sid"]


async def track_egress(server, room: str, codec: str, kind: str, filepath: str) -> tuple[api.EgressInfo, dict]:
    async with lkapi(server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=room))
        args = ("--audio", "440") if kind == "audio" else ("--video", "640x360", "--codec", codec)
        async with Publisher(server, room, "hank", *args) as pub:
            sid = pub.info[f"{kind}_sid"]
            await asyncio.sleep(0.5)
            done = await run_egress(lk, lk.egress.start_track_egress(api.TrackEgressRequest(
                room_name=room, track_id=sid, file=api.DirectFileOutput(filepath=filepath))), 3)
    return done, pub.info


async def test_track_egress_opus_to_ogg(eg_server):
    done, info = await track_egress(eg_server, "te-opus", "", "audio", "te/{track_type}-{track_source}-{track_id}")
    assert done.status == S.EGRESS_COMPLETE, done
    f = done.file_results[0]
    assert f.filename == f"te/audio-microphone-{info['audio_sid']}.ogg"
    p = probe(f.location)
    assert p.streams == {"audio": "opus"} and abs(p.peak_hz - 440) < 5
    assert abs(p.duration - wall_seconds(f.started_at, f.ended_at)) < 0.5, (p, f)


async def test_track_egress_vp8_to_webm(eg_server):
    done, info = await track_egress(eg_server, "te-vp8", "vp8", "video", "te/{track_id}")
    assert done.status == S.EGRESS_COMPLETE, done
    f = done.file_results[0]
    assert f.filename == f"te/{info['video_sid']}.webm"
    p = probe(f.location)
    assert p.streams == {"video": "vp8"} and (p.width, p.height) == (640, 360) and p.video_frames > 20
    assert abs(p.duration - wall_seconds(f.started_at, f.ended_at)) < 0.5, (p, f)


async def test_track_egress_h264_to_mp4(eg_server):
    done, info = await track_egress(eg_server, "te-h264", "h264", "video", "te/h264.webm")
    assert done.status == S.EGRESS_COMPLETE, done
    f = done.file_results[0]
    assert f.filename == "te/h264.mp4"  # the codec decides the container
    p = probe(f.location)
    assert p.streams == {"video": "h264"} and (p.width, p.height) == (640, 360) and p.video_frames > 20
    assert abs(p.duration - wall_seconds(f.started_at, f.ended_at)) < 0.5, (p, f)


async def test_track_egress_to_websocket(eg_server):
    received: list[bytes] = []
    texts: list[str] = []

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == web.WSMsgType.BINARY:
                received.append(msg.data)
            elif msg.type == web.WSMsgType.TEXT:
                texts.append(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/audio", ws_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with lkapi(eg_server) as lk:
            await lk.room.create_room(api.CreateRoomRequest(name="te-ws"))
            async with Publisher(eg_server, "te-ws", "ivy", "--audio", "480") as pub:
                await asyncio.sleep(0.5)
                done = await run_egress(lk, lk.egress.start_track_egress(api.TrackEgressRequest(
                    room_name="te-ws", track_id=pub.info["audio_sid"],
                    websocket_url=f"ws://127.0.0.1:{port}/audio?token=secret")), 3)
    finally:
        await runner.cleanup()
    assert done.status == S.EGRESS_COMPLETE, done
    assert done.stream_results[0].url == f"ws://127.0.0.1:{port}/audio?token={{...}}"  # redacted
    pcm = np.frombuffer(b"".join(received), dtype="<i2").reshape(-1, 2)[:, 0].astype(np.float64)
    assert len(pcm) > 48000 * 2  # S16LE stereo at 48 kHz
    tail = pcm[24000:]
    spec = np.abs(np.fft.rfft(tail * np.hanning(len(tail))))
    assert abs(np.fft.rfftfreq(len(tail), 1 / 48000)[int(np.argmax(spec))] - 480) < 5


async def test_single_speaker_follows_the_active_speaker(eg_server):
    """Bob (blue, silent) publishes first; Alice (green) talks: single-speaker shows Alice."""
    import av

    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="spk-room"))
        async with Publisher(eg_server, "spk-room", "bob", "--video", "320x240", "--color", "20,20,230"):
            await asyncio.sleep(1)
            async with Publisher(eg_server, "spk-room", "alice", "--audio", "440", "--video", "320x240",
                                 "--color", "20,200,20"):
                done = await run_egress(lk, lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
                    room_name="spk-room", layout="single-speaker",
                    advanced=api.EncodingOptions(width=640, height=360),
                    file_outputs=[api.EncodedFileOutput(filepath="spk/single.mp4")])), 4)
    assert done.status == S.EGRESS_COMPLETE, done
    with av.open(done.file_results[0].location) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    # the picture's lower right quarter (the pattern's background there, but for a moving red bar)
    r, g, b = frames[-1][200:340, 340:540].reshape(-1, 3).mean(axis=0)
    assert g > 120 and b < 60, (r, g, b)  # Alice's green, not Bob's blue


async def test_start_egress_media_source_routes_audio_to_channels(eg_server):
    """The unified StartEgress: one participant's video, her audio on the left, his on the right."""
    import av

    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="v2-room"))
        async with Publisher(eg_server, "v2-room", "mia", "--audio", "400", "--video", "320x240"), \
                Publisher(eg_server, "v2-room", "ned", "--audio", "900"):
            req = api.StartEgressRequest(
                room_name="v2-room",
                media=api.MediaSource(
                    participant_video=api.ParticipantVideo(identity="mia"),
                    audio=api.AudioConfig(routes=[
                        api.AudioRoute(participant_identity="mia", channel=api.AudioChannel.AUDIO_CHANNEL_LEFT),
                        api.AudioRoute(participant_identity="ned", channel=api.AudioChannel.AUDIO_CHANNEL_RIGHT)])),
                advanced=api.EncodingOptions(width=320, height=240, framerate=15),
                outputs=[api.Output(file=api.FileOutput(filepath="v2/routes.mp4"))])
            done = await run_egress(lk, lk.egress.start_egress(req), 3.5)
    assert done.status == S.EGRESS_COMPLETE, done
    assert done.WhichOneof("request") == "egress" and done.egress.media.participant_video.identity == "mia"
    with av.open(done.file_results[0].location) as c:
        pcm = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)[:, 48000:]
    peaks = []
    for ch in (0, 1):
        x = pcm[ch].astype(np.float64)
        spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        peaks.append(np.fft.rfftfreq(len(x), 1 / 44100)[int(np.argmax(spec))])
    assert abs(peaks[0] - 400) < 5 and abs(peaks[1] - 900) < 5, peaks
