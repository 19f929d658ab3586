"""The other two official realtime clients as subprocesses, and content checks shared by the
realtime tests.

* `node_client(server, token, *args)` runs tests/node/rtc_node_client.mjs (@livekit/rtc-node) with
  py_client.py's options and returns its JSON report (same shape as py_client's).
* `browser_clients(server, participants, tone=HZ)` runs tests/node/browser_client.mjs:
  livekit-client in Debian's headless chromium, one page per participant, the fake microphone
  playing a `tone` Hz sine; returns one report per participant.
* `assert_tone` / `assert_video` read any of the three reports.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY, API_SECRET, NODE_DIR, ServerProcess
from livekit import api

CHROMIUM = os.environ.get("LKSERVER_CHROMIUM", "/usr/bin/chromium")


def _require_node_modules(*packages: str) -> None:
    for pkg in packages:
        if not (NODE_DIR / "node_modules" / pkg).exists():
            pytest.fail(f"tests/node/node_modules/{pkg} is missing: run `make test` (it runs npm ci)")


async def _run(cmd: list[str], timeout: float, what: str) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(NODE_DIR))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"{what} timed out:\n" + err.decode(errors="replace")[-3000:]) from None
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}"
    return out.decode(errors="replace"), err.decode(errors="replace")


async def node_client(server: ServerProcess, tok: str, *args: str, timeout: float = 60.0) -> dict:
    """Run the official Node realtime SDK client; returns its JSON report."""
    _require_node_modules("@livekit/rtc-node")
    out, err = await _run(["node", str(NODE_DIR / "rtc_node_client.mjs"), server.ws_url, tok, *args],
                          timeout, "node client")
    # the SDK logs JSON lines of its own on stdout; the report is the line with "events"
    lines = [ln for ln in out.splitlines() if ln.startswith('{"events"')]
    assert lines, f"node client printed no report:\n{out[-2000:]}\n{err[-2000:]}"
    report = json.loads(lines[-1])
    report["stderr"] = err[-2000:]
    return report


async def browser_clients(server: ServerProcess, participants: list[dict[str, Any]], tone: int = 440,
                          timeout: float = 90.0) -> list[dict]:
    """Run livekit-client participants in one headless chromium; one report per participant.

    Each participant: token, seconds, and optionally startAfter, v0, publish ("av", "a", "v"),
    simulcast, sendData, dataTopic, rpcMethod, callRpc, muteAfter, waitFor, simulate,
    simulateAfter, room + waitActive (see tests/node/browser_client.mjs)."""
    out, err = await _run(browser_command(server.ws_url, participants, tone), timeout, "browser client")
    return browser_reports(out, err)


def browser_command(ws_url: str, participants: list[dict[str, Any]], tone: int = 440) -> list[str]:
    """The command line of tests/node/browser_client.mjs (for a caller that runs it elsewhere,
    e.g. behind a shaped link); its output goes to `browser_reports`."""
    _require_node_modules("livekit-client", "playwright-core")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium)")
    spec = json.dumps({"tone": tone, "participants": participants, "api": {"key": API_KEY, "secret": API_SECRET}})
    return ["node", str(NODE_DIR / "browser_client.mjs"), ws_url, spec]


def browser_reports(out: str, err: str) -> list[dict]:
    lines = [ln for ln in out.splitlines() if ln.startswith('{"participants"')]
    assert lines, f"browser client printed no report:\n{out[-2000:]}\n{err[-2000:]}"
    reports = json.loads(lines[-1])["participants"]
    for r in reports:
        # the browser reports a histogram of AnalyserNode peaks; give it py_client's fields too
        for a in r["audio"].values():
            peaks = Counter({float(k): v for k, v in a["peaks"].items()})
            a["peak_hz"] = peaks.most_common(1)[0][0] if peaks else 0.0
    return reports


async def wait_active(server: ServerProcess, room: str, identities: list[str], timeout: float = 30.0) -> None:
    """Until every one of `identities` is ACTIVE in `room` (its transport connected), per the API.

    Reliable data goes only to participants whose data channel is open (as in LiveKit), so a test
    that checks every message starts its sender after the receivers are in."""
    async with api.LiveKitAPI(server.url, API_KEY, API_SECRET) as lk:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants
            except api.TwirpError:  # the room does not exist yet
                parts = []
            active = {p.identity for p in parts if p.state == api.ParticipantInfo.ACTIVE}
            if set(identities) <= active:
                return
            assert asyncio.get_running_loop().time() < deadline, f"not active in {room}: {parts}"
            await asyncio.sleep(0.1)


def events(report: dict, name: str) -> list[dict]:
    return [e for e in report["events"] if e["event"] == name]


def tracks_from(report: dict, kind: str, publisher: str) -> dict[str, dict]:
    return {k: v for k, v in report[kind].items() if k.startswith(publisher + "/")}


def assert_tone(report: dict, publisher: str, hz: float, tolerance: float = 5.0) -> None:
    """Every audio track received from `publisher` carried a sine at `hz` (spectral peak)."""
    tones = tracks_from(report, "audio", publisher)
    assert tones, f"no audio from {publisher}: {short(report)}"
    for key, a in tones.items():
        if "peaks" in a:  # browser: AnalyserNode samples every 250 ms, each with its peak
            assert a["loud_samples"] >= 8, (key, a)
            assert a["packets"] > 100, (key, a)
        else:  # Python / Node: PCM of the whole subscription, one FFT
            assert a.get("tone_samples", a["samples"]) > 48000, (key, a)
        assert abs(a["peak_hz"] - hz) < tolerance, (key, a)


def assert_video(report: dict, publisher: str, sizes: str | set[str], min_frames: int = 20) -> None:
    """Every video track received from `publisher` decoded >= min_frames, mostly of `sizes`."""
    allowed = {sizes} if isinstance(sizes, str) else sizes
    videos = tracks_from(report, "video", publisher)
    assert videos, f"no video from {publisher}: {short(report)}"
    for key, v in videos.items():
        assert v["frames"] >= min_frames, (key, v)
        assert v["sizes"], (key, v)
        assert max(v["sizes"], key=v["sizes"].get) in allowed, (key, v)


def short(report: dict) -> str:
    """A report without its bulky parts, for assertion messages."""
    return json.dumps({k: v for k, v in report.items() if k not in ("stderr", "console", "sdk_log")})[:4000]


__all__ = ["assert_tone", "assert_video", "browser_clients", "events", "node_client", "short", "tracks_from",
           "wait_active"]
