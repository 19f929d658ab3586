"""Ingress test fixtures: a realtime server with ingress (and a webhook receiver), encoders, polling.

Encoders are real: Debian's `ffmpeg` pushes RTMP as OBS would (a moving test pattern and a sine
tone), aiortc publishes over WHIP (ingress_whip_client.py), and a local HTTP server serves files
and HLS playlists for URL input. The room side is the official Python realtime SDK
(tests/rtc/py_client.py), which reports the tone it hears and the frame sizes it decodes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "rtc"))

from conftest import API_KEY, API_SECRET, ServerProcess
from rtcfix import free_udp_port, py_client, require_netns, rtc_config, token

from lkserver import api

HERE = Path(__file__).resolve().parent
WHIP_CLIENT = HERE / "ingress_whip_client.py"


def ingress_config(webhook_url: str = "", extra: str = "", ingress: str = "") -> str:
    hook = f"""
webhook:
  api_key: {API_KEY}
  urls: [{webhook_url}]
""" if webhook_url else ""
    return rtc_config(free_udp_port(), f"""
ingress:
  rtmp_port: 0
  {ingress}
{hook}{extra}""")


def start_ingress_server(data_dir: Path, webhook_url: str = "", extra: str = "", ingress: str = "") -> ServerProcess:
    """`ingress`: one more `key: value` line for the ingress section."""
    require_netns()
    return ServerProcess(data_dir, config=ingress_config(webhook_url, extra, ingress)).start()


def lkapi(server: ServerProcess) -> api.LiveKitAPI:
    return api.LiveKitAPI(server.url, API_KEY, API_SECRET)


def ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.fail("ffmpeg is not installed: run `make test` (it installs Debian's ffmpeg)")
    return exe


def push_rtmp(url: str, seconds: float, size: str = "1280x720", fps: int = 30, hz: int = 660,
              extra: list[str] | None = None) -> subprocess.Popen:
    """ffmpeg publishing a moving test pattern and a tone in real time, as OBS would (H.264 + AAC)."""
    cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-re",
           "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
           "-f", "lavfi", "-i", f"sine=frequency={hz}:sample_rate=44100",
           "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(fps), "-b:v", "2500k",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-t", str(seconds),
           *(extra or []), "-f", "flv", url]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def wait_exit(proc: subprocess.Popen, timeout: float = 60.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate()
    return proc.returncode, err or ""


async def poll(fn: Callable[[], Awaitable[Any]], until: Callable[[Any], bool], timeout: float = 30.0,
               what: str = "condition") -> Any:
    """Call `fn` until its result satisfies `until` (the last result is returned or reported)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await fn()
        if until(last):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


async def ingress_info(lk: api.LiveKitAPI, ingress_id: str) -> Any:
    res = await lk.ingress.list_ingress(api.ListIngressRequest(ingress_id=ingress_id))
    return res.items[0]


def status_of(info: Any) -> str:
    return api.IngressState.Status.Name(info.state.status)


class WebhookRecorder:
    """An HTTP receiver in the test's event loop; keeps each verified event (official receiver)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> WebhookRecorder:
        import livekit.api as official

        receiver = official.WebhookReceiver(official.TokenVerifier(API_KEY, API_SECRET))

        async def handle(request: web.Request) -> web.Response:
            body = (await request.read()).decode()
            self.events.append(receiver.receive(body, request.headers.get("Authorization", "")))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    def ingress_events(self, ingress_id: str) -> list[str]:
        return [e.event for e in self.events if e.ingress_info.ingress_id == ingress_id]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def tone_and_sizes(report: dict, identity: str) -> tuple[float, dict[str, int]]:
    audio = [v for k, v in report["audio"].items() if k.startswith(identity + "/")]
    video = [v for k, v in report["video"].items() if k.startswith(identity + "/")]
    peak = audio[0]["peak_hz"] if audio else 0.0
    sizes = video[0]["sizes"] if video else {}
    return peak, sizes


def simulcast_seen(sizes: dict[str, int], top: str, layers: list[str]) -> bool:
    """Frames of a simulcast track: enough of them, the top layer's size among them, and no size
    the track does not publish (the SFU may pick a lower layer for a while under load)."""
    return sum(sizes.values()) > 30 and sizes.get(top, 0) > 0 and set(sizes) <= set(layers)


def disconnected(report: dict, identity: str) -> bool:
    return any(e["event"] == "participant_disconnected" and e.get("identity") == identity
               for e in report["events"])


def ingress_failures(log: str) -> list[str]:
    """Error lines of the ingress loggers, and tracebacks that pass through lkserver/ingress/
    (other parts' log lines are theirs to judge)."""
    out = [ln for ln in log.splitlines() if " ERROR lkserver.ingress" in ln]
    for block in log.split("Traceback (most recent call last):")[1:]:
        if "lkserver/ingress/" in block.split("\n20", 1)[0]:
            out.append("Traceback" + block[:2000])
    return out


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:3000]


__all__ = [
    "API_KEY",
    "API_SECRET",
    "WHIP_CLIENT",
    "WebhookRecorder",
    "disconnected",
    "dump",
    "ffmpeg",
    "ingress_failures",
    "ingress_info",
    "lkapi",
    "poll",
    "push_rtmp",
    "py_client",
    "simulcast_seen",
    "start_ingress_server",
    "status_of",
    "token",
    "tone_and_sizes",
    "wait_exit",
]
