"""Egress test fixtures: a realtime server with egress configured, official clients, PyAV probes.

Outputs are checked by content: duration against the wall time the egress reported, codecs,
resolution, and the tone the official client publishes (peak of the spectrum).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from livekit import api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "rtc"))

from conftest import API_KEY, API_SECRET, ServerProcess
from rtcfix import PY_CLIENT, ROOT, free_udp_port, require_netns, rtc_config, token

HERE = Path(__file__).resolve().parent
PUBLISHER = HERE / "eg_publisher.py"
S = api.EgressStatus


def egress_config(out: Path, extra: str = "", top: str = "") -> str:
    """A realtime config with `egress:` (plus `extra` lines under it, `top` at the top level)."""
    return rtc_config(free_udp_port(), f"""
{top}
egress:
  output_dir: {out}
{extra}
""")


def start_egress_server(data_dir: Path, extra: str = "", top: str = "") -> ServerProcess:
    require_netns()
    return ServerProcess(data_dir, config=egress_config(data_dir / "out", extra, top)).start()


@pytest.fixture(scope="module")
def eg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = start_egress_server(tmp_path_factory.mktemp("egress"))
    yield s
    s.stop()


def lkapi(server: ServerProcess) -> api.LiveKitAPI:
    return api.LiveKitAPI(server.url, API_KEY, API_SECRET)


class Publisher:
    """The official Python realtime SDK publishing a tone and/or a test pattern (a subprocess)."""

    def __init__(self, server: ServerProcess, room: str, identity: str, *args: str) -> None:
        self.server, self.room, self.identity, self.args = server, room, identity, args
        self.proc: Any = None
        self.info: dict = {}

    async def __aenter__(self) -> Publisher:
        import json

        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(PUBLISHER), self.server.ws_url, token(self.identity, self.room), *self.args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=str(ROOT))
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line:
            err = await self.proc.stderr.read()
            raise AssertionError("publisher failed:\n" + err.decode()[-3000:])
        self.info = json.loads(line)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def wait_status(lk: api.LiveKitAPI, egress_id: str, statuses: tuple, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        res = await lk.egress.list_egress(api.ListEgressRequest(egress_id=egress_id))
        info = res.items[0]
        if info.status in statuses:
            return info
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"egress stayed {S.Name(info.status)}: {info}")
        await asyncio.sleep(0.1)


@dataclass
class Probe:
    duration: float
    streams: dict  # kind -> codec name
    width: int
    height: int
    peak_hz: float
    video_frames: int
    audio_rms: float


def probe(path: str | os.PathLike) -> Probe:
    with av.open(str(path)) as c:
        duration = float(c.duration or 0) / 1e6
        kinds = {s.type: s.codec_context.name for s in c.streams if s.type in ("audio", "video")}
        width = height = 0
        for s in c.streams.video:
            width, height = s.codec_context.width, s.codec_context.height
    peak, rms, frames = 0.0, 0.0, 0
    if "audio" in kinds:
        peak, rms = tone_of(path)
    if "video" in kinds:
        with av.open(str(path)) as c:
            for f in c.decode(video=0):
                frames += 1
                width, height = f.width, f.height
    return Probe(duration, kinds, width, height, peak, frames, rms)


def tone_of(path: str | os.PathLike) -> tuple[float, float]:
    """(peak frequency, RMS) of the audio, skipping the first second."""
    chunks, rate = [], 48000
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):
            rate = f.sample_rate
            a = f.to_ndarray()
            a = a.reshape(-1, len(f.layout.channels))[:, 0] if a.shape[0] == 1 else a[0]
            chunks.append(a.astype(np.float64))
    if not chunks:
        return 0.0, 0.0
    pcm = np.concatenate(chunks)[rate:]
    if len(pcm) < rate // 4:
        return 0.0, 0.0
    spec = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spec))]), float(np.sqrt(np.mean(pcm ** 2)))


def wall_seconds(started_ns: int, ended_ns: int) -> float:
    return (ended_ns - started_ns) / 1e9


__all__ = ["API_KEY", "API_SECRET", "PY_CLIENT", "Probe", "Publisher", "S", "eg_server", "egress_config", "lkapi",
           "probe", "start_egress_server", "token", "tone_of", "wait_status", "wall_seconds"]


class RtmpListener:
    """A local RTMP server (FFmpeg's, through PyAV) that receives one push and saves it as FLV."""

    def __init__(self, tmp: Path, name: str = "live") -> None:
        import threading

        from conftest import free_port

        self.port = free_port()
        self.url = f"rtmp://127.0.0.1:{self.port}/live/{name}-key"
        self.path = tmp / f"{name}-{self.port}.flv"
        self.packets = {"video": 0, "audio": 0}
        self.error = ""
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            src = av.open(self.url, "r", format="flv", options={"listen": "1", "timeout": "60"})
        except Exception as e:  # noqa: BLE001
            self.error = str(e)
            return
        self.connected.set()
        out = av.open(str(self.path), "w", format="flv")
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams if s.type in ("audio", "video")}
        try:
            for p in src.demux():
                if p.dts is None or p.stream.index not in streams:
                    continue
                self.packets[p.stream.type] += 1
                p.stream = streams[p.stream.index]
                out.mux(p)
        except Exception:  # noqa: BLE001 - the pusher closing ends the demuxer with EIO
            pass
        finally:
            out.close()
            src.close()

    def join(self, timeout: float = 15.0) -> None:
        self.thread.join(timeout)
