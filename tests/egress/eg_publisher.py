#!/usr/bin/env python3
"""The official Python realtime SDK publishing what egress tests record.

  eg_publisher.py URL TOKEN [--audio HZ] [--video WxH] [--codec vp8|h264] [--screen] [--color R,G,B]

Prints one JSON line once everything is published ({"identity", "audio_sid", "video_sid"}), then
keeps publishing (a sine tone, a moving test pattern at 15 fps) until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import numpy as np
from livekit import rtc

SR = 48000


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("token")
    ap.add_argument("--audio", type=float, default=0.0)
    ap.add_argument("--video", default="")
    ap.add_argument("--codec", default="vp8")
    ap.add_argument("--screen", action="store_true")
    ap.add_argument("--color", default="0,0,0", help="R,G,B of the test pattern's background")
    a = ap.parse_args()
    room = rtc.Room()
    await room.connect(a.url, a.token, rtc.RoomOptions(auto_subscribe=False))
    out: dict = {"identity": room.local_participant.identity}
    tasks = []
    if a.audio:
        src = rtc.AudioSource(SR, 1)
        track = rtc.LocalAudioTrack.create_audio_track("tone", src)
        pub = await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        out["audio_sid"] = pub.sid

        async def tone() -> None:
            n, phase = SR // 100, 0
            loop = asyncio.get_running_loop()
            start = loop.time()
            while True:
                idx = np.arange(n) + phase
                phase += n
                data = (np.sin(2 * np.pi * a.audio * idx / SR) * 12000).astype(np.int16)
                await src.capture_frame(rtc.AudioFrame(data.tobytes(), SR, 1, n))
                ahead = start + phase / SR - loop.time()
                if ahead > 0.05:
                    await asyncio.sleep(ahead - 0.04)

        tasks.append(asyncio.ensure_future(tone()))
    if a.video:
        w, h = (int(x) for x in a.video.split("x"))
        bg = [int(c) for c in a.color.split(",")]
        vsrc = rtc.VideoSource(w, h)
        vtrack = rtc.LocalVideoTrack.create_video_track("cam", vsrc)
        codec = rtc.VideoCodec.H264 if a.codec == "h264" else rtc.VideoCodec.VP8
        source = rtc.TrackSource.SOURCE_SCREENSHARE if a.screen else rtc.TrackSource.SOURCE_CAMERA
        vpub = await room.local_participant.publish_track(
            vtrack, rtc.TrackPublishOptions(source=source, video_codec=codec, simulcast=False))
        out["video_sid"] = vpub.sid

        async def frames() -> None:
            i = 0
            while True:
                img = np.zeros((h, w, 4), dtype=np.uint8)
                img[:, :, :3] = bg
                img[:, :, 3] = 255
                x = (i * 8) % w
                img[:, max(0, x - 40):x, 0] = 230  # a moving red bar
                img[: h // 2, : w // 2, 1] = 200
                vsrc.capture_frame(rtc.VideoFrame(w, h, rtc.VideoBufferType.RGBA, img.tobytes()))
                i += 1
                await asyncio.sleep(1 / 15)

        tasks.append(asyncio.ensure_future(frames()))
    print(json.dumps(out), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    for t in tasks:
        t.cancel()
    await room.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
