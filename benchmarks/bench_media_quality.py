#!/usr/bin/env python3
"""Media quality benchmark: simulcast layer-switch latency and recovery after a loss burst.

Everything is the official Python realtime SDK (`livekit`) against a real lkserver process:

1. Layer switches. A publisher (tests/rtc/py_client.py, 1280x720 VP8 simulcast: 320x180,
   640x360 and 1280x720 layers, ~15 fps) and a subscriber that first receives the top layer,
   then calls `RemoteTrackPublication.set_video_quality()` through a plan (default: low, high,
   medium, low, medium, high, twice: every ordered pair of layers, 12 switches), waiting
   `--dwell` seconds between switches. Latency = from the call to the first decoded frame of
   the new size, in the subscriber's process (one monotonic clock). Also reported: the longest
   gap between decoded frames around each switch (a switch should never freeze the picture).

2. Recovery after a loss burst. The subscriber sits behind a shaped link (tests/rtc/
   linkshaper.py: a veth pair into a second network namespace); for `--bursts` seconds
   (default 0.3, 1 and 3, after a 0 s control window) everything the server sends it is
   dropped (a `blackhole` qdisc on the server end of the veth: this kernel has no netem), then
   the link is cleared. Reported per burst: time from clearing to the first decoded frame, time
   from clearing to the start of the first 1 s window whose frame rate is >= 80 % of the rate in
   the 3 s before the burst, the frames never shown, and the subscriber's inbound-rtp counters
   (RTX packets received and keyframes decoded up to 1 s after clearing, PLIs sent and keyframes
   decoded up to the end of the `--recovery` window) saying whether the hole was repaired by
   retransmission or needed a keyframe. RTX counts include the server's padding probes, which
   go on the RTX stream; that is why only the first second after clearing is used for them.
   After each burst the decoded sizes and the server's `subscriber_capacity` log lines (its
   stream allocator committing a link capacity from the subscriber's REMB) are listed.

The forwarding cost per packet is measured by bench_forward_core.py and bench_rtc.py.

Runs itself inside the WebRTC test network namespace (scripts/in-netns.sh; needs root for the
namespace, the veth and tc). One fresh server per run; `--runs` runs (default 3).
  .venv/bin/python benchmarks/bench_media_quality.py [--runs 3] [--parts switch,loss]
      [--plan low,high,medium,...] [--dwell 3] [--bursts 0,0.3,1,3] [--recovery 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "rtc")]

SIZES = {"low": "320x180", "medium": "640x360", "high": "1280x720"}
TOP = SIZES["high"]
DEFAULT_PLAN = "low,high,medium,low,medium,high,low,high,medium,low,medium,high"


# --------------------------------------------------------------------------------------------
# the subscriber: a child process (so the shaped one can live in the far namespace)
# --------------------------------------------------------------------------------------------

async def subscriber(a: argparse.Namespace) -> dict:
    """Receive the first video track; optionally switch layers through a plan. Prints progress
    lines ({"progress": ...}) as it goes and one {"report": ...} line at the end. Times are
    time.monotonic(), which every process on the machine shares."""
    from inbound_stats import sample_inbound
    from livekit import rtc

    levels = {"low": rtc.VideoQuality.VIDEO_QUALITY_LOW, "medium": rtc.VideoQuality.VIDEO_QUALITY_MEDIUM,
              "high": rtc.VideoQuality.VIDEO_QUALITY_HIGH}
    out: dict = {"frames": [], "stats": [], "switches": [], "events": [], "errors": []}
    frames: list = out["frames"]
    room = rtc.Room()
    tasks: list[asyncio.Task] = []
    loop = asyncio.get_running_loop()
    got_video: asyncio.Future = loop.create_future()
    top_seen = asyncio.Event()
    waiter: list = []  # [size, future, not_before] while a switch waits for its new size

    def emit(**kw) -> None:
        print(json.dumps({"progress": kw}), flush=True)

    def ev(name: str, **kw) -> None:
        out["events"].append({"t": round(time.monotonic(), 4), "event": name, **kw})

    async def read_video(track: rtc.Track) -> None:
        stream = rtc.VideoStream(track)
        last = ""
        async for e in stream:
            now = time.monotonic()
            size = f"{e.frame.width}x{e.frame.height}"
            frames.append([round(now, 4), size])
            if size != last:
                emit(t=round(now, 4), size=size)
                last = size
            if size == TOP:
                top_seen.set()
            if waiter and waiter[0] == size and now >= waiter[2] and not waiter[1].done():
                waiter[1].set_result(now)

    async def sample_stats(track: rtc.Track) -> None:
        await sample_inbound(track, out["stats"], a.stats_interval, digits=4)

    @room.on("track_subscribed")
    def on_track(track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO and not got_video.done():
            got_video.set_result(pub)
            tasks.append(asyncio.ensure_future(read_video(track)))
            tasks.append(asyncio.ensure_future(sample_stats(track)))

    for name in ("reconnecting", "reconnected", "disconnected"):
        room.on(name, lambda *args, name=name: ev(name))

    @room.on("connection_quality_changed")
    def on_quality(p, quality) -> None:
        ev("connection_quality", identity=p.identity, quality=int(quality))

    try:
        await room.connect(a.url, a.token, rtc.RoomOptions(auto_subscribe=True))
        pub = await asyncio.wait_for(got_video, 60)
        await asyncio.wait_for(top_seen.wait(), 60)
    except Exception as e:  # noqa: BLE001
        out["errors"].append(f"setup: {type(e).__name__}: {e}")
        return out
    emit(top=round(time.monotonic(), 4))
    end = time.monotonic() + a.seconds
    if a.plan:
        await asyncio.sleep(a.settle)
        for q in a.plan.split(","):
            before = frames[-1][1] if frames else ""
            fut = loop.create_future()
            t_call = time.monotonic()
            waiter[:] = [SIZES[q], fut, t_call]
            pub.set_video_quality(levels[q])
            try:
                t_new = await asyncio.wait_for(fut, a.switch_timeout)
            except TimeoutError:
                t_new = None
            out["switches"].append({"to": q, "from": before, "t_call": round(t_call, 4),
                                    "t_new": round(t_new, 4) if t_new else None})
            await asyncio.sleep(a.dwell)
    else:
        stop = Path(a.stop_file) if a.stop_file else None
        while time.monotonic() < end and not (stop and stop.exists()):
            await asyncio.sleep(0.1)
    for t in tasks:
        t.cancel()
    try:
        await asyncio.wait_for(room.disconnect(), 10)
    except Exception:  # noqa: BLE001
        out["errors"].append("disconnect timed out")
    return out


def subscriber_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench_media_quality.py _subscriber")
    ap.add_argument("url")
    ap.add_argument("token")
    ap.add_argument("--plan", default="")
    ap.add_argument("--settle", type=float, default=4.0)
    ap.add_argument("--dwell", type=float, default=3.0)
    ap.add_argument("--switch-timeout", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=120.0, help="without a plan: at most this long after the top layer")
    ap.add_argument("--stop-file", default="")
    ap.add_argument("--stats-interval", type=float, default=0.2)
    a = ap.parse_args(argv)
    report = asyncio.run(subscriber(a))
    print(json.dumps({"report": report}), flush=True)
    sys.stdout.flush()
    # skip interpreter finalization, which can race the SDK's Rust runtime (see py_client.py)
    os._exit(0)


# --------------------------------------------------------------------------------------------
# the orchestrator
# --------------------------------------------------------------------------------------------

class Child:
    """A client process: progress lines collected as they come, stderr kept (bounded)."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.progress: list[dict] = []
        self.report: dict | None = None
        self.changed = asyncio.Event()
        self.log = log
        self.tasks = [asyncio.ensure_future(self._out()), asyncio.ensure_future(self._err())]

    async def _out(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            if not line.startswith(b"{"):
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "progress" in msg:
                self.progress.append(msg["progress"])
            elif "report" in msg:
                self.report = msg["report"]
            self.changed.set()

    async def _err(self) -> None:
        assert self.proc.stderr is not None
        with open(self.log, "ab") as f:
            async for line in self.proc.stderr:
                f.write(line)

    async def wait_for(self, key: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.progress:
                if key in p:
                    return p
            if self.proc.returncode is not None:
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 0.5)
            except TimeoutError:
                pass
        return None

    async def finish(self, timeout: float) -> dict:
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.report is None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"subscriber gave no report (exit {self.proc.returncode}):\n{tail}")
        return self.report

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def spawn(cmd: list[str], log: Path) -> Child:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, cwd=str(ROOT))
    return Child(proc, log)


async def publisher(server, room: str, seconds: float, log: Path) -> Child:
    from rtcfix import PY_CLIENT, token

    return await spawn([sys.executable, str(PY_CLIENT), server.ws_url, token("cam", room), "--publish-video",
                        "1280x720", "--simulcast", "--seconds", str(seconds)], log)


def frames_in(frames: list, t0: float, t1: float) -> list:
    return [f for f in frames if t0 <= f[0] < t1]


async def switch_run(server, a: argparse.Namespace, tmp: Path, run: int) -> list[dict]:
    from rtcfix import token

    room = f"mq-switch-{run}"
    plan = a.plan.split(",")
    sub = await spawn([sys.executable, str(THIS), "_subscriber", server.ws_url, token("viewer", room),
                       "--plan", a.plan, "--dwell", str(a.dwell), "--settle", "4"], tmp / f"switch-sub-{run}.log")
    await asyncio.sleep(1.0)
    pub = await publisher(server, room, 60 + len(plan) * (a.dwell + 10), tmp / f"switch-pub-{run}.log")
    try:
        report = await sub.finish(120 + len(plan) * (a.dwell + 12))
        (tmp / f"switch-sub-{run}.json").write_text(json.dumps(report))
    finally:
        await pub.kill()
    if report["errors"]:
        print(f"  run {run}: subscriber errors: {report['errors']}", flush=True)
    frames = report["frames"]
    rows = []
    for s in report["switches"]:
        t_call, t_new = s["t_call"], s["t_new"]
        end = (t_new or t_call + 10) + 1.0
        around = [f[0] for f in frames if t_call - 1.0 <= f[0] < end]
        gaps = [b - x for x, b in itertools.pairwise(around)]
        rows.append({"run": run, "from": s["from"], "to": SIZES[s["to"]],
                     "latency_ms": round((t_new - t_call) * 1000, 1) if t_new else None,
                     "max_gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
                     "old_size_frames_after_call": sum(1 for f in frames if t_call <= f[0] < (t_new or end)
                                                       and f[1] == s["from"])})
    return rows


def blackhole(dev: str) -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True, check=False)
    subprocess.run(["tc", "qdisc", "add", "dev", dev, "root", "blackhole"], check=True, capture_output=True)


def qdisc_dropped(dev: str) -> int:
    text = subprocess.run(["tc", "-s", "qdisc", "show", "dev", dev], capture_output=True, text=True,
                          check=False).stdout
    for word, nxt in zip(text.split(), text.split()[1:]):
        if word == "(dropped":
            return int(nxt.rstrip(","))
    return -1


def capacity_changes(log: str, identity: str) -> list[tuple[float, int, int]]:
    """(wall time, capacity kbps, usage kbps) of the server's subscriber_capacity log lines."""
    found = []
    for line in log.splitlines():
        if "subscriber_capacity" not in line or f"identity={identity} " not in line:
            continue
        try:
            stamp, ms = line[:23].split(",")
            wall = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000
            kv = dict(w.split("=", 1) for w in line.split() if "=" in w)
            found.append((wall, int(kv["capacity_kbps"]), int(kv["usage_kbps"])))
        except (ValueError, KeyError):
            continue
    return found


def stat_at(stats: list[dict], t: float) -> dict | None:
    before = [s for s in stats if s["t"] <= t]
    return before[-1] if before else None


async def loss_run(server, link, a: argparse.Namespace, tmp: Path, run: int) -> list[dict]:
    from linkshaper import DEV, SERVER_IP
    from rtcfix import token

    room = f"mq-loss-{run}"
    bursts = [float(x) for x in a.bursts.split(",")]
    stop = tmp / f"stop-{run}"
    budget = a.settle + sum(d + a.recovery for d in bursts) + 30
    proc = await link.spawn(sys.executable, str(THIS), "_subscriber", f"ws://{SERVER_IP}:{server.port}",
                            token("far", room), "--stop-file", str(stop), "--seconds", str(budget))
    sub = Child(proc, tmp / f"loss-sub-{run}.log")
    await asyncio.sleep(1.0)
    pub = await publisher(server, room, budget + 60, tmp / f"loss-pub-{run}.log")
    marks = []
    try:
        if await sub.wait_for("top", 90) is None:
            raise RuntimeError("the shaped subscriber never received the top layer: "
                               + (tmp / f"loss-sub-{run}.log").read_text(errors="replace")[-1500:])
        await asyncio.sleep(a.settle)
        for d in bursts:
            dropped0 = qdisc_dropped(DEV)
            if d > 0:
                blackhole(DEV)
            t_black = time.monotonic()
            await asyncio.sleep(d)
            dropped = qdisc_dropped(DEV) if d > 0 else 0
            link.clear()
            t_clear, wall_clear = time.monotonic(), time.time()
            marks.append((d, t_black, t_clear, dropped if dropped >= 0 else dropped0, wall_clear))
            await asyncio.sleep(a.recovery)
        stop.touch()
        report = await sub.finish(60)
        (tmp / f"loss-sub-{run}.json").write_text(json.dumps({"marks": marks, **report}))
    finally:
        link.clear()
        await pub.kill()
        await sub.kill()
    if report["errors"]:
        print(f"  run {run}: subscriber errors: {report['errors']}", flush=True)
    frames, stats = report["frames"], report["stats"]
    rows = []
    capacity = capacity_changes(server.log_text(), "far")
    for d, tb, tc, dropped, wall_clear in marks:
        pre = frames_in(frames, tb - 3.0, tb)
        pre_fps = len(pre) / 3.0
        end = tc + a.recovery - 0.2
        after = frames_in(frames, tc, end)
        first_ms = round((after[0][0] - tc) * 1000, 1) if after else None
        rate_ms = None
        for f in after:
            if f[0] + 1.0 > end:
                break
            if len(frames_in(frames, f[0], f[0] + 1.0)) >= 0.8 * pre_fps:
                rate_ms = round((f[0] - tc) * 1000, 1)
                break
        s0, s1, s_rep = stat_at(stats, tb), stat_at(stats, end), stat_at(stats, tc + 1.0)
        delta = {k: (s1[k] - s0[k]) for k in ("nacks", "rtx", "pli", "fir", "keyframes", "lost", "freezes")} \
            if s0 and s1 else {}
        if delta and s_rep:
            delta["freeze_s"] = round(s1["freeze_s"] - s0["freeze_s"], 2)
            # retransmissions answer the NACKs at once; later RTX-stream packets are mostly the
            # allocator's padding probes, which the receiver counts as retransmissions too
            delta["rtx_1s"] = s_rep["rtx"] - s0["rtx"]
            delta["keyframes_1s"] = s_rep["keyframes"] - s0["keyframes"]
            delta["pli_1s"] = s_rep["pli"] - s0["pli"]
        shown = len(frames_in(frames, tb, end))
        skipped = max(0, round(pre_fps * (end - tb)) - shown)
        if not delta:
            how = "?"
        elif delta.get("keyframes_1s", 0) > 0:
            how = "keyframe" + (" (+RTX)" if delta.get("rtx_1s", 0) > 0 else "")
        elif delta.get("rtx_1s", 0) > 0:
            how = "NACK/RTX" + (" (keyframe later)" if delta["keyframes"] > 0 else "")
        else:
            how = "nothing lost" + (" (keyframe later)" if delta["keyframes"] > 0 else "")
        sizes: list = []  # [ms after clearing, size] at each change
        for f in after:
            if not sizes or sizes[-1][1] != f[1]:
                sizes.append([round((f[0] - tc) * 1000), f[1]])
        cap = [[round((w - wall_clear) * 1000), c, u] for w, c, u in capacity
               if wall_clear - (tc - tb) <= w < wall_clear + (end - tc)]
        events = [e["event"] for e in report["events"] if tb <= e["t"] < end and e["event"] != "connection_quality"]
        rows.append({"run": run, "burst_s": d, "dropped_packets": dropped, "pre_fps": round(pre_fps, 1),
                     "frames_during": len(frames_in(frames, tb, tc)), "first_frame_ms": first_ms,
                     "rate_80pct_ms": rate_ms, "frames_not_shown": skipped, "recovered_by": how,
                     "sizes_after": sizes, "capacity_kbps_after": cap, "client_events": events,
                     **delta})
    return rows


def rng(values: list) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    lo, hi = min(v), max(v)
    fmt = (lambda x: f"{x:.0f}") if max(abs(lo), abs(hi)) >= 10 or all(float(x).is_integer() for x in v) \
        else (lambda x: f"{x:.1f}")
    return fmt(lo) if lo == hi else f"{fmt(lo)}-{fmt(hi)}"


def print_tables(switches: list[dict], losses: list[dict], runs: int) -> None:
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
    if switches:
        print("\nLayer switches (set_video_quality -> first decoded frame of the new size)")
        print(f"{'switch':<22} {'n':>3} {'latency ms':>14} {'max frame gap ms':>17}")
        pairs: dict[tuple, list] = {}
        for r in switches:
            pairs.setdefault((r["from"], r["to"]), []).append(r)
        for (f, t), rs in sorted(pairs.items()):
            print(f"{f + ' -> ' + t:<22} {len(rs):>3} {rng([r['latency_ms'] for r in rs]):>14} "
                  f"{rng([r['max_gap_ms'] for r in rs]):>17}")
        for run in range(1, runs + 1):
            lat = sorted(r["latency_ms"] for r in switches if r["run"] == run and r["latency_ms"] is not None)
            miss = sum(1 for r in switches if r["run"] == run and r["latency_ms"] is None)
            if lat:
                print(f"run {run}: {len(lat)} switches, p50 {statistics.median(lat):.0f} ms, max {lat[-1]:.0f} ms"
                      + (f", {miss} never arrived" if miss else ""))
        lat = sorted(r["latency_ms"] for r in switches if r["latency_ms"] is not None)
        if lat:
            print(f"all runs: {len(lat)} switches, p50 {statistics.median(lat):.0f} ms, "
                  f"p90 {lat[min(len(lat) - 1, int(0.9 * len(lat)))]:.0f} ms, max {lat[-1]:.0f} ms")
    if losses:
        print("\nLoss bursts (server -> subscriber link blacked out, then cleared)")
        print(f"{'burst':>6} {'n':>2} {'dropped':>8} {'1st frame ms':>13} {'>=80% fps ms':>13} {'not shown':>10} "
              f"{'RTX<=1s':>8} {'PLI':>4} {'keyfr<=1s':>9} {'keyfr':>6} {'lowest':>8}  recovered by")
        by: dict[float, list] = {}
        for r in losses:
            by.setdefault(r["burst_s"], []).append(r)
        for d, rs in sorted(by.items()):
            hows = sorted({r["recovered_by"] for r in rs})
            lowest = sorted({min((sz for _, sz in r["sizes_after"]), key=lambda x: int(x.split("x")[0]), default="-")
                             for r in rs}, key=lambda x: int(x.split("x")[0]) if x != "-" else 0)
            print(f"{d:>5}s {len(rs):>2} {rng([r['dropped_packets'] for r in rs]):>8} "
                  f"{rng([r['first_frame_ms'] for r in rs]):>13} {rng([r['rate_80pct_ms'] for r in rs]):>13} "
                  f"{rng([r['frames_not_shown'] for r in rs]):>10} {rng([r.get('rtx_1s') for r in rs]):>8} "
                  f"{rng([r.get('pli') for r in rs]):>4} {rng([r.get('keyframes_1s') for r in rs]):>9} "
                  f"{rng([r.get('keyframes') for r in rs]):>6} {'/'.join(lowest):>8}  {'; '.join(hows)}")
        print("dropped: packets the blackhole qdisc dropped; RTX<=1s, keyfr<=1s: RTX packets received and keyframes "
              "decoded from the blackout to 1 s after clearing; PLI, keyfr: PLIs sent and keyframes decoded up to "
              "the end of the recovery window; lowest: the smallest layer decoded after clearing")
        print("\nAfter each burst: [ms after clearing, decoded size] changes; the server's subscriber_capacity "
              "commits [ms, capacity kbps, usage kbps]")
        for r in losses:
            print(f"  run {r['run']} {r['burst_s']}s: sizes {r['sizes_after']}  capacity {r['capacity_kbps_after']}"
                  + (f"  client events {r['client_events']}" if r["client_events"] else ""))


def start_server(data_dir: Path):
    """An lkserver listening on 127.0.0.1 and the shaped link's SERVER_IP (as the shaped-link tests
    run it). The media port is picked free on every address: a client's socket on 127.0.0.2
    can hold a port that is free on 127.0.0.1, so a start that loses that race is retried."""
    import socket

    from conftest import ServerProcess
    from linkshaper import SERVER_IP
    from rtcfix import rtc_config

    for attempt in range(5):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("0.0.0.0", 0))
            udp = s.getsockname()[1]
        config = rtc_config(udp).replace("node_ip: 127.0.0.1", f"node_ip: 127.0.0.1,{SERVER_IP}")
        try:
            return ServerProcess(data_dir / f"try{attempt}", config=config + "bind_addresses: ['0.0.0.0']\n").start()
        except RuntimeError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


async def orchestrate(a: argparse.Namespace) -> int:
    from linkshaper import ShapedLink

    parts = set(a.parts.split(","))
    switches: list[dict] = []
    losses: list[dict] = []
    failures: list[str] = []
    keep = Path(a.keep_logs) if a.keep_logs else None
    with tempfile.TemporaryDirectory() as d:
        tmp = keep or Path(d)
        tmp.mkdir(parents=True, exist_ok=True)
        link = ShapedLink()
        try:
            for run in range(1, a.runs + 1):
                # the veth goes away with the far namespace (when the shaped subscriber exits):
                # make it again, before the server starts, so the server has SERVER_IP to bind
                link.create()
                os.environ["LKSERVER_TEST_LOG_LEVEL"] = a.server_log_level
                server = start_server(tmp / f"server-{run}")
                try:
                    for part, fn, into in (("switch", switch_run, switches), ("loss", loss_run, losses)):
                        if part not in parts:
                            continue
                        try:
                            rows = await (fn(server, a, tmp, run) if part == "switch"
                                          else fn(server, link, a, tmp, run))
                        except Exception as e:  # noqa: BLE001 - one failed run should not lose the others
                            failures.append(f"run {run} {part}: {type(e).__name__}: {str(e)[:500]}")
                            print(failures[-1], flush=True)
                            continue
                        into += rows
                        for r in rows:
                            print(json.dumps({part: r}), flush=True)
                finally:
                    server.stop()
        finally:
            link.destroy()
    print_tables(switches, losses, a.runs)
    for f in failures:
        print("FAILED:", f)
    if a.json:
        Path(a.json).write_text(json.dumps({"switches": switches, "losses": losses, "failures": failures,
                                            "loadavg": os.getloadavg()}, indent=2))
    return 1 if failures else 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_subscriber":
        subscriber_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--runs", type=int, default=3, help="runs, each with a fresh server (default 3)")
    ap.add_argument("--parts", default="switch,loss", help="switch, loss or both (default)")
    ap.add_argument("--plan", default=DEFAULT_PLAN, help="qualities to switch to, in order, from the top layer")
    ap.add_argument("--dwell", type=float, default=3.0, help="seconds between one switch's new size and the next call")
    ap.add_argument("--bursts", default="0,0.3,1,3",
                    help="blackout lengths in seconds; 0 is a control window with no blackout (default 0,0.3,1,3)")
    ap.add_argument("--recovery", type=float, default=10.0, help="seconds watched after each blackout")
    ap.add_argument("--settle", type=float, default=6.0, help="seconds of top layer before the first blackout")
    ap.add_argument("--server-log-level", default="info", help="debug adds the server's REMB lines to its log")
    ap.add_argument("--keep-logs", default="", help="keep server and client logs in this directory")
    ap.add_argument("--json", default="", help="write every measured row here")
    a = ap.parse_args()
    bad = [q for q in a.plan.split(",") if q not in SIZES]
    if bad:
        ap.error(f"--plan: unknown quality {bad[0]!r} (low, medium, high)")
    if os.environ.get("LKSERVER_NETNS") != "1":
        script = str(ROOT / "scripts" / "in-netns.sh")
        os.execv(script, [script, sys.executable, *sys.argv])
    return asyncio.run(orchestrate(a))


if __name__ == "__main__":
    sys.exit(main())
