"""Every kind of output of a room composite: HLS segments and playlists, RTMP pushes changed by
UpdateStream, JPEG images, audio-only OGG and video-only MP4, all probed by content."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import av
from egressfix import Publisher, RtmpListener, S, eg_server, lkapi, probe, wait_status, wall_seconds  # noqa: F401
from livekit import api


async def record(lk, req: api.RoomCompositeEgressRequest, seconds: float) -> api.EgressInfo:
    info = await lk.egress.start_room_composite_egress(req)
    await wait_status(lk, info.egress_id, (S.EGRESS_ACTIVE,))
    await asyncio.sleep(seconds)
    await lk.egress.stop_egress(api.StopEgressRequest(egress_id=info.egress_id))
    return await wait_status(lk, info.egress_id, (S.EGRESS_COMPLETE, S.EGRESS_FAILED, S.EGRESS_ABORTED))


async def test_hls_segments_live_and_vod_playlists(eg_server):
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="rc-hls"))
        async with Publisher(eg_server, "rc-hls", "bob", "--audio", "660", "--video", "640x360"):
            await asyncio.sleep(0.5)
            done = await record(lk, api.RoomCompositeEgressRequest(
                room_name="rc-hls", layout="speaker-light", preset=api.EncodingOptionsPreset.H264_720P_30,
                segment_outputs=[api.SegmentedFileOutput(filename_prefix="hls/rc", playlist_name="hls/rc.m3u8",
                                                         live_playlist_name="hls/rc-live.m3u8", segment_duration=2)]),
                5.0)
    assert done.status == S.EGRESS_COMPLETE, done
    seg = done.segment_results[0]
    assert seg.playlist_name == "hls/rc.m3u8" and seg.live_playlist_name == "hls/rc-live.m3u8"
    playlist = Path(seg.playlist_location).read_text()
    live = Path(seg.live_playlist_location).read_text()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in playlist and playlist.rstrip().endswith("#EXT-X-ENDLIST")
    names = re.findall(r"^(rc_\d{5}\.ts)$", playlist, re.MULTILINE)
    assert names == [f"rc_{i:05d}.ts" for i in range(len(names))] and seg.segment_count == len(names) >= 3
    durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+),", playlist)]
    assert all(d <= 2.1 for d in durations[:-1])
    assert abs(sum(durations) - wall_seconds(seg.started_at, seg.ended_at)) < 0.6
    assert "PLAYLIST-TYPE" not in live and set(re.findall(r"^(rc_\d{5}\.ts)$", live, re.MULTILINE)) <= set(names)
    total = 0.0
    for name in names:  # every segment decodes on its own
        p = probe(Path(seg.playlist_location).parent / name)
        assert p.streams == {"video": "h264", "audio": "aac"} and p.video_frames > 0
        total += p.duration
    assert abs(total - sum(durations)) < 0.5
    whole = probe(seg.playlist_location)  # and the playlist plays as one stream with the tone
    assert abs(whole.peak_hz - 660) < 5 and (whole.width, whole.height) == (1280, 720)


async def test_rtmp_streams_added_and_removed(eg_server, tmp_path):
    first, second = RtmpListener(tmp_path, "first"), RtmpListener(tmp_path, "second")
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="rc-rtmp"))
        async with Publisher(eg_server, "rc-rtmp", "carol", "--audio", "550", "--video", "640x360"):
            info = await lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
                room_name="rc-rtmp", stream_outputs=[api.StreamOutput(protocol=api.StreamProtocol.RTMP,
                                                                       urls=[first.url])]))
            assert info.stream_results[0].url == f"rtmp://127.0.0.1:{first.port}/live/{{fir...key}}"
            await wait_status(lk, info.egress_id, (S.EGRESS_ACTIVE,))
            await asyncio.sleep(2)
            updated = await lk.egress.update_stream(api.UpdateStreamRequest(egress_id=info.egress_id,
                                                                            add_output_urls=[second.url]))
            assert len(updated.stream_results) == 2
            await asyncio.sleep(3)
            updated = await lk.egress.update_stream(api.UpdateStreamRequest(egress_id=info.egress_id,
                                                                            remove_output_urls=[first.url]))
            await asyncio.sleep(1)
            with_bad = None
            try:
                await lk.egress.update_stream(api.UpdateStreamRequest(egress_id=info.egress_id,
                                                                      remove_output_urls=["rtmp://x/live/nope"]))
            except api.TwirpError as e:
                with_bad = e
            assert with_bad is not None and with_bad.code == "not_found"
            assert with_bad.message.endswith("stream rtmp://x/live/nope not found")
            # removing the last stream ends the egress
            await lk.egress.update_stream(api.UpdateStreamRequest(egress_id=info.egress_id,
                                                                  remove_output_urls=[second.url]))
            done = await wait_status(lk, info.egress_id, (S.EGRESS_COMPLETE, S.EGRESS_FAILED))
    first.join()
    second.join()
    assert done.status == S.EGRESS_COMPLETE and done.details == "End reason: All streams stopped", done
    assert [s.status for s in done.stream_results] == [api.StreamInfo.Status.FINISHED] * 2
    assert not first.error and not second.error
    for listener, at_least in ((first, 4.0), (second, 2.0)):
        p = probe(listener.path)
        assert p.streams == {"video": "h264", "audio": "aac"} and (p.width, p.height) == (1280, 720)
        assert p.duration > at_least - 1.0, p
        assert abs(p.peak_hz - 550) < 5


async def test_images_every_interval(eg_server):
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="rc-img"))
        async with Publisher(eg_server, "rc-img", "dan", "--video", "640x360"):
            done = await record(lk, api.RoomCompositeEgressRequest(
                room_name="rc-img", image_outputs=[api.ImageOutput(capture_interval=1, width=320, height=180,
                                                                   filename_prefix="img/{room_name}")]), 3.5)
    assert done.status == S.EGRESS_COMPLETE, done
    img = done.image_results[0]
    assert img.filename_prefix == "img/rc-img" and img.image_count >= 3
    manifest = Path(done.manifest_location)
    import json
    m = json.loads(manifest.read_text())
    assert len(m["images"]) == img.image_count
    for entry in m["images"]:
        assert re.fullmatch(r"img/rc-img_\d{5}\.jpeg", entry["filename"])
        with av.open(entry["location"]) as c:
            f = next(c.decode(video=0))
            assert (f.width, f.height) == (320, 180) and c.streams.video[0].codec_context.name == "mjpeg"


async def test_audio_only_ogg_and_video_only_mp4(eg_server):
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="rc-av"))
        async with Publisher(eg_server, "rc-av", "erin", "--audio", "880", "--video", "640x360"):
            audio, mp3, video = await asyncio.gather(
                record(lk, api.RoomCompositeEgressRequest(room_name="rc-av", audio_only=True,
                                                          file_outputs=[api.EncodedFileOutput(filepath="av/a")]), 3),
                record(lk, api.RoomCompositeEgressRequest(room_name="rc-av", audio_only=True, file_outputs=[
                    api.EncodedFileOutput(filepath="av/m", file_type=api.EncodedFileType.MP3)]), 3),
                record(lk, api.RoomCompositeEgressRequest(
                    room_name="rc-av", video_only=True,
                    advanced=api.EncodingOptions(width=640, height=360, framerate=15, video_bitrate=800),
                    file_outputs=[api.EncodedFileOutput(filepath="av/v.ogg")]), 3))
    assert audio.status == video.status == mp3.status == S.EGRESS_COMPLETE
    assert mp3.file_results[0].filename == "av/m.mp3"
    m = probe(mp3.file_results[0].location)
    assert m.streams == {"audio": "mp3float"} and abs(m.peak_hz - 880) < 5  # PyAV's MP3 decoder
    assert audio.file_results[0].filename == "av/a.ogg"  # audio only: OGG/Opus by default
    assert video.file_results[0].filename == "av/v.mp4"  # a wrong known extension is replaced
    a, v = probe(audio.file_results[0].location), probe(video.file_results[0].location)
    assert a.streams == {"audio": "opus"} and abs(a.peak_hz - 880) < 5
    assert v.streams == {"video": "h264"} and (v.width, v.height) == (640, 360)
    for p, f in ((a, audio.file_results[0]), (v, video.file_results[0])):
        assert abs(p.duration - wall_seconds(f.started_at, f.ended_at)) < 0.5, (p, f)
    assert os.path.basename(audio.manifest_location) == f"{audio.egress_id}.json"


async def test_rtmp_destination_down_fails_the_egress(eg_server):
    from conftest import free_port

    url = f"rtmp://127.0.0.1:{free_port()}/live/nobody-listens"
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="rc-down"))
        info = await lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
            room_name="rc-down", stream_outputs=[api.StreamOutput(urls=[url])]))
        done = await wait_status(lk, info.egress_id, (S.EGRESS_COMPLETE, S.EGRESS_FAILED), timeout=30)
    # the only stream failing fails the egress (LiveKit: the last stream output failing)
    assert done.status == S.EGRESS_FAILED and done.error, done
    assert [s.status for s in done.stream_results] == [api.StreamInfo.Status.FAILED]
    assert done.stream_results[0].error and done.stream_results[0].url.endswith("/live/{nob...ens}")
