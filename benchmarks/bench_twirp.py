"""Twirp API throughput: ListRooms and CreateRoom against a bare 200 endpoint on the same HTTP stack.

    .venv/bin/python benchmarks/bench_twirp.py [--seconds 5] [--rounds 3] [--connections 16] [--rooms 10]
        [--json out.json] [--check]

One `lkserver serve --dev` process (log level warn) on a free port, pinned to CPU 0; the load
generator is a separate process pinned to CPU 1 (os.sched_setaffinity; without a second CPU they
share). The generator is a minimal HTTP/1.1 keep-alive client on raw asyncio protocols — far
cheaper per request than the server, so the server's core is the bottleneck (the report shows
both processes' CPU use to prove it). Each connection reuses one valid token of its own.

Scenarios, in one run on one server:
  bare        GET /                                   (health check: routing + auth middleware)
  bare(POST)  POST / with a Twirp request's body, Content-Type and token (verified, from the cache):
              the same handler as bare; shows what the request's shape costs before any Twirp work
  ListRooms   POST /twirp/livekit.RoomService/ListRooms, protobuf, --rooms rooms listed
  CreateRoom  POST /twirp/livekit.RoomService/CreateRoom, protobuf, a new room each time (stored
              durably before the answer; the rooms are deleted after each round, unmeasured)
  CreateRoom(existing)  the same for a room that exists: get-or-create answers it unchanged
The figure is Twirp req/s divided by bare req/s (issue 2 target: >= 0.6); next to it, the same
ratio from the server's CPU time per request, which other load on the machine does not skew.
Rounds are interleaved and the median is reported. `--check` exits non-zero when a ratio misses
the target.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY, SECRET = "devkey", "secret"
TARGET = 0.6
LISTEN_RE = re.compile(r"lkserver listening on http://[^:]+:(\d+)")
SCENARIOS = ("bare", "bare(POST)", "ListRooms", "CreateRoom", "CreateRoom(existing)")


# -- load generator (runs in its own process) ---------------------------------------------------------

class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: send a request, wait for the whole response, repeat."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.need = -1

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            self.status = int(head[9:12])
            self.need = end + 4 + length
        if len(self.buf) >= self.need and self.waiter is not None and not self.waiter.done():
            del self.buf[:self.need]
            self.need = -1
            self.waiter.set_result(self.status)

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def request(self, data: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(data)
        return await self.waiter


def http_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def requests_for(scenario: str, conn_index: int) -> Callable[[int], bytes]:
    """The bytes of request number i on connection `conn_index` (one token per connection)."""
    from livekit.protocol import room as proto

    from lkserver.auth import AccessToken, VideoGrants

    def token(grants: VideoGrants) -> str:
        return (AccessToken(KEY, SECRET).with_identity(f"bench-{conn_index}").with_grants(grants).to_jwt())

    if scenario == "bare":
        fixed = http_request("GET", "/")
        return lambda i: fixed
    if scenario == "bare(POST)":  # GET /'s handler, with a Twirp request's shape: body, token, type
        body = proto.ListRoomsRequest().SerializeToString() or b"\n\x00"
        fixed = http_request("POST", "/", body, {
            "Content-Type": "application/protobuf", "Authorization": "Bearer " + token(VideoGrants(room_list=True))})
        return lambda i: fixed
    if scenario == "ListRooms":
        body = proto.ListRoomsRequest().SerializeToString()
        fixed = http_request("POST", "/twirp/livekit.RoomService/ListRooms", body, {
            "Content-Type": "application/protobuf", "Authorization": "Bearer " + token(VideoGrants(room_list=True))})
        return lambda i: fixed
    if scenario == "CreateRoom(existing)":  # get-or-create of a room that exists: no write
        body = proto.CreateRoomRequest(name="listed-0", empty_timeout=600).SerializeToString()
        fixed = http_request("POST", "/twirp/livekit.RoomService/CreateRoom", body, {
            "Content-Type": "application/protobuf", "Authorization": "Bearer " + token(VideoGrants(room_create=True))})
        return lambda i: fixed
    if scenario == "CreateRoom":
        auth = "Bearer " + token(VideoGrants(room_create=True))

        def create(i: int) -> bytes:
            body = proto.CreateRoomRequest(name=f"bench-{conn_index}-{i}", empty_timeout=600).SerializeToString()
            return http_request("POST", "/twirp/livekit.RoomService/CreateRoom", body,
                                {"Content-Type": "application/protobuf", "Authorization": auth})
        return create
    raise ValueError(scenario)


async def drive(port: int, scenario: str, connections: int, warmup: float, seconds: float,
                window: tuple | None = None) -> dict:
    loop = asyncio.get_running_loop()
    conns = []
    for c in range(connections):
        _, proto = await loop.create_connection(Conn, "127.0.0.1", port)
        conns.append((proto, requests_for(scenario, c)))
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + seconds
    cpu0 = [0.0]

    async def worker(proto: Conn, source: Callable[[int], bytes]) -> None:
        nonlocal errors
        i = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            status = await proto.request(source(i))
            i += 1
            t1 = time.perf_counter()
            if t0 >= measure_from:
                latencies.append(t1 - t0)
                if status != 200:
                    errors += 1

    async def mark_cpu() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu0[0] = time.process_time()
        if window is not None:
            window[0].set()  # the parent reads the server's CPU time now...
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        if window is not None:
            window[1].set()  # ...and now

    marker = asyncio.create_task(mark_cpu())
    await asyncio.gather(*(worker(p, s) for p, s in conns))
    await marker
    client_cpu = (time.process_time() - cpu0[0]) / seconds
    for proto, _ in conns:
        assert proto.transport is not None
        proto.transport.close()
    latencies.sort()
    n = len(latencies)
    return {"requests": n, "rps": n / seconds, "errors": errors, "client_cpu": client_cpu,
            "p50_ms": latencies[n // 2] * 1000 if n else 0.0,
            "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else 0.0}


def generator_main(port: int, scenario: str, connections: int, warmup: float, seconds: float,
                   cpu: int | None, out: mp.Queue, window: tuple | None = None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.path.insert(0, str(ROOT / "src"))
    out.put(asyncio.run(drive(port, scenario, connections, warmup, seconds, window)))


# -- the server ---------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(data_dir: str, cpu: int | None) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "lkserver", "serve", "--dev", "--port", "0", "--tcp-port", "0", "--udp-port", "0",
           "--log-level", "warn", "--data-dir", data_dir]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    if cpu is not None:
        os.sched_setaffinity(proc.pid, {cpu})
    assert proc.stderr is not None
    deadline = time.time() + 30
    for line in proc.stderr:
        m = LISTEN_RE.search(line)
        if m:
            return proc, int(m.group(1))
        if time.time() > deadline:
            break
    proc.kill()
    raise SystemExit("lkserver did not start")


def seed_rooms(port: int, count: int) -> None:
    async def go() -> None:
        from lkserver import api

        async with api.LiveKitAPI(f"http://127.0.0.1:{port}", KEY, SECRET) as lk:
            for i in range(count):
                await lk.room.create_room(api.CreateRoomRequest(name=f"listed-{i}", empty_timeout=3600))

    asyncio.run(go())


def measure(ctx, port: int, pid: int, scenario: str, args: argparse.Namespace, client_cpu: int | None) -> dict:
    q = ctx.Queue()
    window = (ctx.Event(), ctx.Event())
    gen = ctx.Process(target=generator_main, args=(port, scenario, args.connections, args.warmup, args.seconds,
                                                   client_cpu, q, window))
    gen.start()
    timeout = args.seconds + args.warmup + 60
    if not window[0].wait(timeout):
        raise SystemExit(f"{scenario}: the load generator did not start")
    s1, t1 = cpu_seconds(pid), time.perf_counter()
    window[1].wait(timeout)
    s2, t2 = cpu_seconds(pid), time.perf_counter()
    res = q.get(timeout=timeout)
    gen.join()
    res["server_cpu"] = (s2 - s1) / (t2 - t1)
    # server CPU per request: what the server's core spends, whoever else shares the machine
    res["server_us"] = (s2 - s1) / res["requests"] * 1e6 if res["requests"] else 0.0
    return res


def delete_created_rooms(port: int) -> None:
    async def go() -> None:
        from lkserver import api

        async with api.LiveKitAPI(f"http://127.0.0.1:{port}", KEY, SECRET) as lk:
            rooms = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
            names = [r.name for r in rooms if r.name.startswith("bench-")]
            for i in range(0, len(names), 64):
                await asyncio.gather(*(lk.room.delete_room(api.DeleteRoomRequest(room=n)) for n in names[i:i + 64]))

    asyncio.run(go())


def run(args: argparse.Namespace) -> dict[str, list[dict]]:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0] if len(cpus) >= 2 else None
    client_cpu = cpus[1] if len(cpus) >= 2 else None
    data_dir = tempfile.mkdtemp(prefix="bench-twirp-")
    proc, port = start_server(data_dir, server_cpu)
    ctx = mp.get_context("spawn")
    results: dict[str, list[dict]] = {name: [] for name in SCENARIOS}
    try:
        seed_rooms(port, args.rooms)
        for _ in range(args.rounds):  # interleaved, so a disturbance hits every scenario alike
            for scenario in SCENARIOS:
                results[scenario].append(measure(ctx, port, proc.pid, scenario, args, client_cpu))
            delete_created_rooms(port)  # ListRooms lists --rooms rooms in every round
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)
    return results


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each")
    p.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    p.add_argument("--rooms", type=int, default=10, help="rooms that exist for ListRooms (at least 1)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--json", help="also write the per-round results and the summary to this file")
    p.add_argument("--check", action="store_true", help=f"exit 1 if a Twirp/bare ratio is below {TARGET}")
    args = p.parse_args()
    args.rooms = max(1, args.rooms)
    cpus = len(os.sched_getaffinity(0))
    print(f"bench_twirp: {args.connections} connections, {args.seconds:g} s per scenario, {args.rooms} rooms listed, "
          f"{'server on CPU 0, load generator on CPU 1' if cpus >= 2 else 'one CPU shared by server and generator'}")
    results = run(args)
    # per scenario: the median round; ratios from the medians
    summary = {name: {k: median([r[k] for r in rounds]) for k in rounds[0]} for name, rounds in results.items()}
    bare = summary["bare"]
    print(f"{'scenario':<21} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6} {'server us/req':>14} "
          f"{'us ratio':>9} {'server CPU':>10} {'client CPU':>10}")
    ok = True
    for name, r in summary.items():
        ratio = r["rps"] / bare["rps"] if bare["rps"] else 0.0
        cost_ratio = bare["server_us"] / r["server_us"] if r["server_us"] else 0.0
        if name != "bare" and ratio < TARGET:
            ok = False
        print(f"{name:<21} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {ratio:>6.2f} "
              f"{r['server_us']:>14.0f} {cost_ratio:>9.2f} {r['server_cpu']:>9.0%} {r['client_cpu']:>10.0%}")
    errors = sum(r["errors"] for rounds in results.values() for r in rounds)
    if errors:
        ok = False
        print(f"{errors} requests failed")
    print(f"ratio = req/s over bare req/s (median of {args.rounds} interleaved rounds); us ratio = bare's server "
          f"CPU per request over the scenario's (the same figure, free of other load on the machine)")
    print(f"target: Twirp/bare >= {TARGET} -> {'met' if ok else 'MISSED'}")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"args": vars(args), "rounds": results, "summary": summary}, indent=2))
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
