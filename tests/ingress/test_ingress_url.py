"""URL input end to end: an MP4 file and an HLS stream pulled from a local HTTP server.

The ingress starts at CreateIngress, publishes what it pulls at the media's own pace, and ends
COMPLETE when the media does; the official Python SDK checks the tone and the frame size. A
source that cannot be fetched ends in ERROR with the reason; `srt://` is refused clearly.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from aiohttp import web
from ingressfix import (
    dump,
    ffmpeg,
    ingress_info,
    lkapi,
    poll,
    py_client,
    simulcast_seen,
    start_ingress_server,
    token,
    tone_and_sizes,
)

from lkserver import api


def make_media(d: Path) -> None:
    """A 7 s MP4 (H.264 + AAC, 640x360, 500 Hz) and a 7 s HLS stream (2 s segments, 480x270, 700 Hz)."""
    d.mkdir(parents=True, exist_ok=True)
    common = ["-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run([ffmpeg(), *common, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=500:sample_rate=48000", "-t", "7",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-movflags", "+faststart", str(d / "clip.mp4")], check=True, timeout=120)
    (d / "hls").mkdir(exist_ok=True)
    subprocess.run([ffmpeg(), *common, "-f", "lavfi", "-i", "testsrc2=size=480x270:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=700:sample_rate=44100", "-t", "7",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
                    str(d / "hls" / "index.m3u8")], check=True, timeout=120)


@pytest.fixture
async def media_server(tmp_path):
    root = tmp_path / "media"
    await asyncio.to_thread(make_media, root)
    app = web.Application()
    app.router.add_static("/", root)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def url_create(room: str, identity: str, url: str) -> api.CreateIngressRequest:
    return api.CreateIngressRequest(input_type=api.IngressInput.URL_INPUT, room_name=room,
                                    participant_identity=identity, url=url)


@pytest.mark.parametrize("path, hz, size, low, mime", [("/clip.mp4", 500, "640x360", "320x180", "audio/aac"),
                                                       ("/hls/index.m3u8", 700, "480x270", "320x180", "audio/aac")])
async def test_url_input_plays_to_the_end(tmp_path, media_server, path, hz, size, low, mime):
    server = start_ingress_server(tmp_path / "srv")
    try:
        async with lkapi(server) as lk:
            viewer = asyncio.ensure_future(py_client(server, token("viewer", "movie"), "--seconds", "9"))
            await poll(lambda: lk.room.list_participants(api.ListParticipantsRequest(room="movie")),
                       lambda r: len(r.participants) == 1, what="the viewer in the room")
            info = await lk.ingress.create_ingress(url_create("movie", "film", media_server + path))
            assert not info.reusable and info.url == media_server + path and info.enable_transcoding
            assert info.state.status in (api.IngressState.ENDPOINT_BUFFERING, api.IngressState.ENDPOINT_PUBLISHING)
            live = await poll(lambda: ingress_info(lk, info.ingress_id),
                              lambda i: i.state.status == api.IngressState.ENDPOINT_PUBLISHING
                              and len(i.state.tracks) == 2 and i.state.audio.sample_rate,
                              what="PUBLISHING with both tracks")
            report = await viewer
            done = await poll(lambda: ingress_info(lk, info.ingress_id),
                              lambda i: i.state.status != api.IngressState.ENDPOINT_PUBLISHING,
                              timeout=30, what="the end of the media")
            with pytest.raises(api.TwirpError) as e:
                await lk.ingress.update_ingress(api.UpdateIngressRequest(ingress_id=info.ingress_id, name="x"))
    finally:
        server.stop()
    assert e.value.code == "invalid_argument" and "ingress is not reusable and cannot be modified" in e.value.message
    peak, sizes = tone_and_sizes(report, "film")
    assert abs(peak - hz) < 5 and simulcast_seen(sizes, size, [size, low]), dump(report)
    st = live.state
    assert st.resource_id.startswith("UR_") and st.video.mime_type == "video/H264"
    assert f"{st.video.width}x{st.video.height}" == size and st.audio.mime_type == mime
    assert done.state.status == api.IngressState.ENDPOINT_COMPLETE, done
    assert done.state.ended_at > st.started_at and not done.state.error


async def test_url_input_errors(tmp_path, media_server):
    server = start_ingress_server(tmp_path / "srv")
    try:
        async with lkapi(server) as lk:
            with pytest.raises(api.TwirpError) as srt:
                await lk.ingress.create_ingress(url_create("r", "p", "srt://127.0.0.1:7001"))
            with pytest.raises(api.TwirpError) as room:
                await lk.ingress.create_ingress(api.CreateIngressRequest(
                    input_type=api.IngressInput.URL_INPUT, participant_identity="p", url=media_server + "/clip.mp4"))
            missing = await lk.ingress.create_ingress(url_create("r", "p", media_server + "/nothing.mp4"))
            failed = await poll(lambda: ingress_info(lk, missing.ingress_id),
                                lambda i: i.state.status == api.IngressState.ENDPOINT_ERROR, what="ERROR")
            listed = (await lk.ingress.list_ingress(api.ListIngressRequest())).items
    finally:
        server.stop()
    assert srt.value.code == "unimplemented" and "SRT input is not supported" in srt.value.message
    assert room.value.code == "invalid_argument" and room.value.message.endswith("invalid ingress: no room name")
    assert "404" in failed.state.error and failed.state.ended_at
    assert [i.ingress_id for i in listed] == [missing.ingress_id]  # the refused ones left no record
