#!/usr/bin/env python3
"""A WHIP publisher built on aiortc (RFC 9725), as a test client of lkserver's WHIP ingress.

  ingress_whip_client.py ENDPOINT [--bearer KEY] [--seconds S] [--hz HZ] [--size WxH]
                         [--codec vp8|h264] [--delete] [--patch-ice]

POSTs the offer (to ENDPOINT, or to ENDPOINT with `Authorization: Bearer KEY`), applies the
answer and sends a sine tone and a moving picture for S seconds; `--patch-ice` tries an ICE
restart through PATCH; `--delete` ends the session with DELETE on the Location. Prints one JSON
object: HTTP statuses and headers, the answer's codecs, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import sys
import time

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from av import AudioFrame, VideoFrame

SR = 48000


class Tone(MediaStreamTrack):
    kind = "audio"

    def __init__(self, hz: float) -> None:
        super().__init__()
        self.hz = hz
        self.n = 0
        self.start = 0.0

    async def recv(self) -> AudioFrame:
        if not self.start:
            self.start = time.monotonic()
        wait = self.start + self.n / SR - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        samples = 960
        t = (np.arange(samples) + self.n) / SR
        data = (np.sin(2 * np.pi * self.hz * t) * 12000).astype(np.int16)
        frame = AudioFrame.from_ndarray(data[None, :], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SR, self.n, fractions.Fraction(1, SR)
        self.n += samples
        return frame


class Pattern(MediaStreamTrack):
    kind = "video"

    def __init__(self, w: int, h: int, fps: int = 30) -> None:
        super().__init__()
        self.w, self.h, self.fps = w, h, fps
        self.i = 0
        self.start = 0.0

    async def recv(self) -> VideoFrame:
        if not self.start:
            self.start = time.monotonic()
        wait = self.start + self.i / self.fps - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        img = np.zeros((self.h, self.w, 3), np.uint8)
        img[:, :, 1] = 80
        x = (self.i * 8) % self.w
        img[:, x:x + 40, 0] = 230
        img[: self.h // 2, : self.w // 2, 2] = 200
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = self.i * 3000, fractions.Fraction(1, 90000)
        self.i += 1
        return frame


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint")
    ap.add_argument("--bearer", default="")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--hz", type=float, default=550.0)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--codec", default="vp8")
    ap.add_argument("--delete", action="store_true")
    ap.add_argument("--patch-ice", action="store_true")
    a = ap.parse_args()
    out: dict = {"errors": []}
    w, h = (int(v) for v in a.size.split("x"))
    pc = RTCPeerConnection()
    pc.addTransceiver(Tone(a.hz), direction="sendonly")
    vt = pc.addTransceiver(Pattern(w, h), direction="sendonly")
    mime = "video/VP8" if a.codec == "vp8" else "video/H264"
    vt.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == mime])
    states: list[str] = []
    pc.on("connectionstatechange", lambda: states.append(pc.connectionState))
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if a.bearer:
        headers["Authorization"] = f"Bearer {a.bearer}"
    async with aiohttp.ClientSession() as http:
        async with http.post(a.endpoint, data=pc.localDescription.sdp, headers=headers) as resp:
            out["post_status"] = resp.status
            out["post_headers"] = {k: resp.headers[k] for k in
                                   ("Location", "ETag", "Content-Type", "Access-Control-Expose-Headers")
                                   if k in resp.headers}
            body = await resp.text()
        if out["post_status"] != 201:
            out["post_body"] = body
            await pc.close()
            print(json.dumps(out))
            return 0
        out["answer_codecs"] = sorted({ln.split()[1] for ln in body.splitlines() if ln.startswith("a=rtpmap:")})
        await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        origin = a.endpoint.split("/", 3)
        resource = f"{origin[0]}//{origin[2]}{out['post_headers']['Location']}"
        if a.patch_ice:
            frag = "a=ice-ufrag:newfrag1\r\na=ice-pwd:newpassword0123456789abcd\r\n"
            async with http.patch(resource, data=frag, headers={
                    "Content-Type": "application/trickle-ice-sdpfrag",
                    "If-Match": out["post_headers"]["ETag"]}) as resp:
                out["patch_status"] = resp.status
                out["patch_body"] = await resp.text()
            async with http.patch(resource, data=frag, headers={
                    "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "wrong"}) as resp:
                out["patch_wrong_etag_status"] = resp.status
        await asyncio.sleep(a.seconds)
        out["connection_states"] = states
        if a.delete:
            async with http.delete(resource) as resp:
                out["delete_status"] = resp.status
            async with http.delete(resource) as resp:
                out["delete_again_status"] = resp.status
                out["delete_again_body"] = await resp.text()
    await pc.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
