"""Realtime test fixtures: a server with media ports, tokens, official clients as subprocesses.

WebRTC clients built on libwebrtc need a non-loopback interface, so these tests run inside the
private network namespace made by scripts/in-netns.sh (`make test` does that).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from livekit import api

from conftest import API_KEY, API_SECRET, ROOT, ServerProcess, free_port

HERE = Path(__file__).resolve().parent
PY_CLIENT = HERE / "py_client.py"


def require_netns() -> None:
    if os.environ.get("LKSERVER_NETNS") != "1":
        pytest.fail("realtime tests need the test network namespace: run them through "
                    "`scripts/in-netns.sh .venv/bin/pytest tests/rtc` (make test does this)")


def rtc_config(udp_port: int, extra: str = "") -> str:
    return f"""
development: true
keys:
  {API_KEY}: {API_SECRET}
rtc:
  udp_port: {udp_port}
  tcp_port: 0
  node_ip: 127.0.0.1
{extra}
"""


def start_rtc_server(data_dir: Path, extra_config: str = "") -> ServerProcess:
    require_netns()
    return ServerProcess(data_dir, config=rtc_config(free_udp_port(), extra_config)).start()


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rtc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = start_rtc_server(tmp_path_factory.mktemp("rtc"))
    yield s
    s.stop()


@pytest.fixture
def rtc_server_factory(tmp_path: Path) -> Iterator:
    started: list[ServerProcess] = []

    def make(extra_config: str = "") -> ServerProcess:
        s = start_rtc_server(tmp_path / f"rtc{len(started)}", extra_config)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def token(identity: str, room: str, name: str = "", metadata: str = "", **grants: Any) -> str:
    video = api.VideoGrants(room_join=True, room=room, **grants)
    t = api.AccessToken(API_KEY, API_SECRET).with_identity(identity).with_grants(video)
    if name:
        t.with_name(name)
    if metadata:
        t.with_metadata(metadata)
    return t.to_jwt()


async def py_client(server: ServerProcess, tok: str, *args: str, timeout: float = 60.0) -> dict:
    """Run the official Python SDK client; returns its JSON report."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PY_CLIENT), server.ws_url, tok, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(ROOT))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError("python client timed out:\n" + err.decode()[-3000:])
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, f"python client failed ({proc.returncode}):\n{err.decode()[-3000:]}"
    report = json.loads(lines[-1])
    report["stderr"] = err.decode()[-2000:]
    return report


def events(report: dict, name: str) -> list[dict]:
    return [e for e in report["events"] if e["event"] == name]


__all__ = ["events", "free_port", "py_client", "require_netns", "rtc_config", "rtc_server", "rtc_server_factory",
           "start_rtc_server", "token"]
