#!/usr/bin/env python3
"""Realtime forwarding benchmark: server CPU per forwarded packet, connect and first-frame latency.

One lkserver process (pinned to CPU 0) forwards one publisher's track (Opus audio, or 640x360
VP8 video) to 1, 10 and 50 subscribers, all official `livekit` SDK clients (pinned to CPU 1).
Over a steady 10 s window it reads the server's CPU time (/proc/PID/stat) and its forwarded-
packet counter (Prometheus `lkserver_rtp_forwarded_packets`), giving µs of server CPU per
forwarded packet and packets/s per core. The subscribers also report `connect()` time and the
delay from `publish_track()` returning to their first decoded frame.

Runs itself inside the WebRTC test network namespace (scripts/in-netns.sh).
  .venv/bin/python benchmarks/bench_rtc.py [--subs 1,10,50] [--kinds audio,video] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT = Path(__file__).resolve().parent / "rtc_load_client.py"
KEY, SECRET = "devkey", "secret"
WINDOW = 10.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def pinned(cmd: list[str], cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] + cmd if os.cpu_count() and os.cpu_count() > 1 else cmd


def start_server(tmp: Path) -> tuple[subprocess.Popen, int, int]:
    http, metrics_port, udp = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    cfg = tmp / "bench.yaml"
    cfg.write_text(f"""
development: true
keys: {{{KEY}: {SECRET}}}
port: {http}
rtc: {{udp_port: {udp}, tcp_port: 0, node_ip: 127.0.0.1}}
prometheus: {{port: {metrics_port}}}
logging: {{level: warning}}
""")
    proc = subprocess.Popen(pinned([sys.executable, "-m", "lkserver", "serve", "--config", str(cfg),
                                    "--data-dir", str(tmp / "data")], 0),
                            cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=1)
            return proc, http, metrics_port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start: " + (proc.stderr.read() if proc.stderr else ""))


def run_case(http: int, metrics_port: int, server_pid: int, kind: str, subs: int) -> dict:
    url = f"ws://127.0.0.1:{http}"
    room = f"bench-{kind}-{subs}-{int(time.time())}"
    total = WINDOW + 20 + subs * 0.5
    sub = subprocess.Popen(pinned([sys.executable, str(CLIENT), "sub", url, room, str(subs), str(total), KEY, SECRET], 1),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    # every subscriber connected (and done trickling) before the publisher starts
    deadline = time.time() + 60 + subs
    while metric(metrics_port, "lkserver_participants") < subs and time.time() < deadline:
        time.sleep(0.25)
    time.sleep(3 + subs * 0.2)  # let the clients finish their own setup (ICE gathering, trickle)
    pub = subprocess.Popen(pinned([sys.executable, str(CLIENT), "pub", url, room, str(WINDOW + 8), KEY, SECRET, kind], 1),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert pub.stdout is not None
    published = json.loads(pub.stdout.readline())["published_wall"]
    time.sleep(4)
    (u0, s0), p0, t0 = cpu_times(server_pid), metric(metrics_port, "lkserver_rtp_forwarded_packets"), time.monotonic()
    r0 = metric(metrics_port, "lkserver_rtp_received_packets")
    time.sleep(WINDOW)
    (u1, s1), p1, t1 = cpu_times(server_pid), metric(metrics_port, "lkserver_rtp_forwarded_packets"), time.monotonic()
    r1 = metric(metrics_port, "lkserver_rtp_received_packets")
    pub.wait(60)
    out, _ = sub.communicate(timeout=120)
    reports = json.loads(out.strip().splitlines()[-1])
    forwarded = p1 - p0
    cpu = (u1 - u0) + (s1 - s0)
    connects = sorted(r["connect_ms"] for r in reports if "connect_ms" in r)
    firsts = sorted((r["first_frame_wall"] - published) * 1000 for r in reports if r.get("first_frame_wall"))
    return {
        "kind": kind, "subscribers": subs, "window_s": round(t1 - t0, 2),
        "server_cpu_pct": round(100 * cpu / (t1 - t0), 1),
        "server_user_pct": round(100 * (u1 - u0) / (t1 - t0), 1),
        "server_system_pct": round(100 * (s1 - s0) / (t1 - t0), 1),
        "received_pps": round((r1 - r0) / (t1 - t0), 1),
        "forwarded_pps": round(forwarded / (t1 - t0), 1),
        "us_per_forwarded_packet": round(1e6 * cpu / forwarded, 2) if forwarded else None,
        "forwarded_per_core_s": round(forwarded / cpu) if cpu else None,
        "connected": len(connects), "subscribers_with_media": len(firsts),
        "connect_ms_p50": pct(connects, 50), "connect_ms_p95": pct(connects, 95),
        "first_frame_ms_p50": pct(firsts, 50), "first_frame_ms_p95": pct(firsts, 95),
    }


def pct(values: list[float], p: int) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(len(values) * p / 100))], 1)


def main() -> int:
    if os.environ.get("LKSERVER_NETNS") != "1":
        os.execv(str(ROOT / "scripts" / "in-netns.sh"), [str(ROOT / "scripts" / "in-netns.sh"), sys.executable, *sys.argv])
    ap = argparse.ArgumentParser()
    ap.add_argument("--subs", default="1,10,50")
    ap.add_argument("--kinds", default="audio,video")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as d:
        proc, http, metrics_port = start_server(Path(d))
        try:
            for kind in a.kinds.split(","):
                for n in (int(x) for x in a.subs.split(",")):
                    r = run_case(http, metrics_port, proc.pid, kind, n)
                    results.append(r)
                    print(json.dumps(r), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    print()
    print("| track | subscribers | server CPU | forwarded pkt/s | µs CPU / fwd pkt | fwd pkt/s per core | connect p50/p95 ms | first frame p50/p95 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['kind']} | {r['subscribers']} | {r['server_cpu_pct']} % | {r['forwarded_pps']} | "
              f"{r['us_per_forwarded_packet']} | {r['forwarded_per_core_s']} | {r['connect_ms_p50']} / {r['connect_ms_p95']} | "
              f"{r['first_frame_ms_p50']} / {r['first_frame_ms_p95']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
