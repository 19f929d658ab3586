#!/usr/bin/env python3
"""Ingress benchmark: server CPU per 720p RTMP stream transcoded to three layers, and the latency
from RTMP-in to the frame at a subscriber.

One lkserver process, pinned to CPU 0, ingests `--streams` RTMP streams of 1280x720 at 30 fps
(H.264 ~3 Mbps + AAC, a moving picture) and transcodes each to the default preset's three
simulcast layers (1280x720, 640x360, 320x180 H.264) plus Opus, publishing them into a room. The
pushers are PyAV encoders pinned to CPU 1 (x264 ultrafast, zerolatency, as a streaming encoder
set for low latency would be); each frame carries its capture time as a 40-bit barcode. One
official `livekit` SDK subscriber per stream (CPU 1) decodes the video and reads the barcodes.

Over a steady window the benchmark reports the server's CPU time per stream (/proc/PID/stat:
user + system, in cores), and per stream the capture-to-decoded-frame latency at the subscriber
(p50/p95), and that minus the pusher's median capture-to-socket time (its encode and mux calls,
timed per frame): RTMP-in to frame-at-subscriber. Targets: at most 1 core per stream, within
1.5 s. Runs itself inside the WebRTC test network namespace (scripts/in-netns.sh).

  .venv/bin/python benchmarks/bench_ingress.py [--streams 1] [--window 20] [--check] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
KEY, SECRET = "devkey", "secret"
BITS = 40  # barcode: capture time in ms (mod 2^40), one block per bit across the top of the frame
W, H, FPS = 1280, 720, 30
TARGET_CORES = 1.0
TARGET_LATENCY_MS = 1500


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_times(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pinned(cmd: list[str], cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] + cmd if (os.cpu_count() or 1) > 1 else cmd


def pct(values: list[float], p: int) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p / 100))], 1)


# -- barcode -----------------------------------------------------------------------------------------

def draw_code(img: np.ndarray, value: int) -> None:
    h, w = img.shape[:2]
    bh = h // 12
    img[:bh] = 0
    for i in range(BITS):
        if value >> (BITS - 1 - i) & 1:
            x0, x1 = i * w // BITS, (i + 1) * w // BITS
            img[: bh, x0:x1] = 255


def read_code(gray: np.ndarray) -> int:
    h, w = gray.shape[:2]
    y = h // 24
    value = 0
    for i in range(BITS):
        x = int((i + 0.5) * w / BITS)
        value = (value << 1) | int(gray[y, x] > 128)
    return value


# -- roles (separate processes) -------------------------------------------------------------------------

def run_pusher(url: str, seconds: float, out_path: str) -> None:
    """PyAV: draw, encode (x264 ultrafast zerolatency) and push FLV over RTMP in real time."""
    import av

    container = av.open(url, mode="w", format="flv")
    v = container.add_stream("libx264", rate=FPS)
    v.width, v.height, v.pix_fmt = W, H, "yuv420p"
    v.bit_rate = 3_000_000
    v.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(FPS * 2)}
    a = container.add_stream("aac", rate=44100)
    a.layout = "stereo"
    samples, n_audio = 1024, 0
    start = time.monotonic()
    delays = []
    base = np.zeros((H, W, 3), np.uint8)
    base[:, :, 1] = 60
    i = 0
    while time.monotonic() - start < seconds:
        due = start + i / FPS
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        captured = time.time()
        img = base.copy()
        x = (i * 12) % W
        img[H // 8:, x:x + 80, 0] = 230
        img[H // 2:, :, 2] = (i * 3) % 255
        draw_code(img, int(captured * 1000) % (1 << BITS))
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        for p in v.encode(frame):
            container.mux(p)
        delays.append(time.time() - captured)
        while n_audio / 44100 <= (i + 1) / FPS:
            t = (np.arange(samples) + n_audio) / 44100
            x_a = (np.sin(2 * np.pi * 440 * t) * 0.2).astype(np.float32)
            af = av.AudioFrame.from_ndarray(np.stack([x_a, x_a]), format="fltp", layout="stereo")
            af.sample_rate, af.pts = 44100, n_audio
            n_audio += samples
            for p in a.encode(af):
                container.mux(p)
        i += 1
    container.close()
    Path(out_path).write_text(json.dumps({"frames": i, "send_ms_p50": pct([d * 1000 for d in delays], 50)}))


async def run_subscriber(url: str, token: str, seconds: float, skip: float, out_path: str) -> None:
    from livekit import rtc

    room = rtc.Room()
    lat: list[float] = []
    sizes: dict[str, int] = {}
    t0 = time.monotonic()

    async def read(track: rtc.Track) -> None:
        async for e in rtc.VideoStream(track):
            now = time.time()
            f = e.frame
            sizes[f"{f.width}x{f.height}"] = sizes.get(f"{f.width}x{f.height}", 0) + 1
            if time.monotonic() - t0 < skip:
                continue
            if f.type != rtc.VideoBufferType.I420:
                f = f.convert(rtc.VideoBufferType.I420)
            luma = np.frombuffer(f.data, np.uint8, count=f.width * f.height).reshape(f.height, f.width)
            sent = read_code(luma)
            delta = (int(now * 1000) % (1 << BITS)) - sent
            if 0 <= delta < 60_000:
                lat.append(float(delta))

    tasks = []

    @room.on("track_subscribed")
    def on_track(track, pub, participant) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            tasks.append(asyncio.ensure_future(read(track)))

    await room.connect(url, token)
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await room.disconnect()
    Path(out_path).write_text(json.dumps({"latency_ms": lat, "sizes": sizes}))


# -- the benchmark ----------------------------------------------------------------------------------------

def start_server(tmp: Path) -> tuple[subprocess.Popen, int]:
    http, udp = free_port(), free_port(socket.SOCK_DGRAM)
    cfg = tmp / "bench.yaml"
    cfg.write_text(f"""
development: true
keys: {{{KEY}: {SECRET}}}
port: {http}
rtc: {{udp_port: {udp}, tcp_port: 0, node_ip: 127.0.0.1}}
ingress: {{rtmp_port: 0}}
logging: {{level: warning}}
""")
    with open(tmp / "server.log", "w") as log:  # kept for post-mortems; the child holds its own copy
        proc = subprocess.Popen(pinned([sys.executable, "-m", "lkserver", "serve", "--config", str(cfg),
                                        "--data-dir", str(tmp / "data")], 0),
                                cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=log, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=1)
            return proc, http
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start: " + (tmp / "server.log").read_text()[-3000:])


async def create_ingresses(http: int, n: int) -> list:
    sys.path.insert(0, str(ROOT / "src"))
    from lkserver import api

    out = []
    async with api.LiveKitAPI(f"http://127.0.0.1:{http}", KEY, SECRET) as lk:
        for i in range(n):
            out.append(await lk.ingress.create_ingress(api.CreateIngressRequest(
                input_type=api.IngressInput.RTMP_INPUT, room_name=f"bench-{i}", participant_identity=f"enc-{i}")))
    return out


def token_for(room: str, identity: str) -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from lkserver import api

    return api.AccessToken(KEY, SECRET).with_identity(identity).with_grants(
        api.VideoGrants(room_join=True, room=room)).to_jwt()


def main() -> int:
    if os.environ.get("LKSERVER_NETNS") != "1" and "--role" not in sys.argv:
        os.execv(str(ROOT / "scripts" / "in-netns.sh"), [str(ROOT / "scripts" / "in-netns.sh"), sys.executable,
                                                         *sys.argv])
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--json", default="")
    ap.add_argument("--role", default="")
    ap.add_argument("--url", default="")
    ap.add_argument("--token", default="")
    ap.add_argument("--seconds", type=float, default=0.0)
    ap.add_argument("--skip", type=float, default=0.0)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    if a.role == "pusher":
        run_pusher(a.url, a.seconds, a.out)
        return 0
    if a.role == "subscriber":
        asyncio.run(run_subscriber(a.url, a.token, a.seconds, a.skip, a.out))
        return 0

    warmup, tail = 8.0, 4.0
    total = warmup + a.window + tail
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server, http = start_server(tmp)
        procs: list[subprocess.Popen] = []
        try:
            infos = asyncio.run(create_ingresses(http, a.streams))
            for i, info in enumerate(infos):
                procs.append(subprocess.Popen(pinned([sys.executable, __file__, "--role", "subscriber",
                                                      "--url", f"ws://127.0.0.1:{http}",
                                                      "--token", token_for(f"bench-{i}", f"viewer-{i}"),
                                                      "--seconds", str(total), "--skip", str(warmup),
                                                      "--out", str(tmp / f"sub{i}.json")], 1)))
            time.sleep(3)
            for i, info in enumerate(infos):
                procs.append(subprocess.Popen(pinned([sys.executable, __file__, "--role", "pusher",
                                                      "--url", f"{info.url}/{info.stream_key}",
                                                      "--seconds", str(total), "--out", str(tmp / f"push{i}.json")],
                                                     1)))
            time.sleep(warmup)
            c0, w0 = cpu_times(server.pid), time.monotonic()
            time.sleep(a.window)
            c1, w1 = cpu_times(server.pid), time.monotonic()
            for p in procs:
                p.wait(total + 60)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            server.send_signal(signal.SIGTERM)
            server.wait(20)
        cores = (c1 - c0) / (w1 - w0)
        results = {"streams": a.streams, "window_s": round(w1 - w0, 1),
                   "server_cores_total": round(cores, 3), "server_cores_per_stream": round(cores / a.streams, 3),
                   "per_stream": []}
        for i in range(a.streams):
            sub = json.loads((tmp / f"sub{i}.json").read_text())
            push = json.loads((tmp / f"push{i}.json").read_text())
            send = push["send_ms_p50"] or 0.0
            lat = [x - send for x in sub["latency_ms"]]
            results["per_stream"].append({
                "frames_measured": len(lat), "sizes_at_subscriber": sub["sizes"],
                "pusher_capture_to_socket_ms_p50": send,
                "capture_to_frame_ms_p50": pct(sub["latency_ms"], 50),
                "capture_to_frame_ms_p95": pct(sub["latency_ms"], 95),
                "rtmp_in_to_frame_ms_p50": pct(lat, 50), "rtmp_in_to_frame_ms_p95": pct(lat, 95),
            })
    print(json.dumps(results, indent=1))
    print()
    print("| streams | server CPU per stream (cores) | RTMP-in to frame p50 / p95 (ms) | frames measured |")
    print("|---|---|---|---|")
    for s in results["per_stream"]:
        print(f"| {a.streams} | {results['server_cores_per_stream']} | {s['rtmp_in_to_frame_ms_p50']} / "
              f"{s['rtmp_in_to_frame_ms_p95']} | {s['frames_measured']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    if a.check:
        ok = results["server_cores_per_stream"] <= TARGET_CORES and all(
            s["rtmp_in_to_frame_ms_p95"] is not None and s["rtmp_in_to_frame_ms_p95"] <= TARGET_LATENCY_MS
            for s in results["per_stream"])
        print("target met" if ok else "TARGET MISSED", f"(<= {TARGET_CORES} core per stream, "
              f"p95 <= {TARGET_LATENCY_MS} ms)")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
