#!/usr/bin/env python3
"""Load client for bench_rtc.py: N subscribers (official `livekit` SDK) in one process, or a publisher.

  rtc_load_client.py sub URL ROOM N SECONDS KEY SECRET    -> JSON: connect ms, first-frame times
  rtc_load_client.py pub URL ROOM SECONDS KEY SECRET audio|video
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import numpy as np
from livekit import api, rtc

SR = 48000


def token(key: str, secret: str, identity: str, room: str) -> str:
    return (api.AccessToken(key, secret).with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())


async def subscriber(url: str, room_name: str, i: int, seconds: float, key: str, secret: str, out: list) -> None:
    room = rtc.Room()
    rec = {"first_frame_wall": None, "frames": 0}
    tasks = []

    async def drain(track: rtc.Track) -> None:
        stream = rtc.AudioStream(track) if track.kind == rtc.TrackKind.KIND_AUDIO else rtc.VideoStream(track)
        async for _ in stream:
            if rec["first_frame_wall"] is None:
                rec["first_frame_wall"] = time.time()
            rec["frames"] += 1
            # stop pulling decoded media after a few frames: the benchmark measures the server,
            # and 50 decoding clients would starve it of the machine's other CPU
            if rec["frames"] >= 10:
                break
        await stream.aclose()

    @room.on("track_subscribed")
    def on_track(track, pub, participant) -> None:
        tasks.append(asyncio.ensure_future(drain(track)))

    t = time.monotonic()
    try:
        await room.connect(url, token(key, secret, f"sub-{i}", room_name))
        rec["connect_ms"] = (time.monotonic() - t) * 1000
    except Exception as e:  # noqa: BLE001
        rec["error"] = str(e)
    out.append(rec)
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await room.disconnect()


async def run_subs(url: str, room: str, n: int, seconds: float, key: str, secret: str) -> None:
    out: list = []
    await asyncio.gather(*(subscriber(url, room, i, seconds, key, secret, out) for i in range(n)))
    print(json.dumps(out))


async def run_pub(url: str, room_name: str, seconds: float, key: str, secret: str, kind: str) -> None:
    room = rtc.Room()
    await room.connect(url, token(key, secret, "publisher", room_name))
    if kind == "audio":
        src = rtc.AudioSource(SR, 1)
        track = rtc.LocalAudioTrack.create_audio_track("tone", src)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    else:
        w, h = 640, 360
        src = rtc.VideoSource(w, h)
        track = rtc.LocalVideoTrack.create_video_track("cam", src)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False)
    await room.local_participant.publish_track(track, opts)
    published = time.time()
    print(json.dumps({"published_wall": published}), flush=True)
    end = time.monotonic() + seconds
    start, n = time.monotonic(), 0
    rng = np.random.default_rng(1)
    while time.monotonic() < end:
        if kind == "audio":
            idx = np.arange(SR // 100) + n * (SR // 100)
            data = (np.sin(2 * np.pi * 440 * idx / SR) * 12000).astype(np.int16)
            await src.capture_frame(rtc.AudioFrame(data.tobytes(), SR, 1, SR // 100))
            n += 1
            ahead = start + n / 100 - time.monotonic()
        else:
            img = rng.integers(0, 255, (360, 640, 4), dtype=np.uint8) if n % 30 == 0 else img  # noqa: F821
            src.capture_frame(rtc.VideoFrame(640, 360, rtc.VideoBufferType.RGBA, img.tobytes()))
            n += 1
            ahead = start + n / 30 - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
    await room.disconnect()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "sub":
        url, room, n, seconds, key, secret = sys.argv[2:8]
        asyncio.run(run_subs(url, room, int(n), float(seconds), key, secret))
    else:
        url, room, seconds, key, secret, kind = sys.argv[2:8]
        asyncio.run(run_pub(url, room, float(seconds), key, secret, kind))
