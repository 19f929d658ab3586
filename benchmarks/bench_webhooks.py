"""Webhook delivery: event-to-delivery latency and sustained events/s on loopback.

    .venv/bin/python benchmarks/bench_webhooks.py [--rate 1000] [--seconds 10] [--rooms 100]
        [--backend sqlite|redis --redis 127.0.0.1:6379] [--backlog 50000] [--check]

The server's real path in one process: `EventBus.publish` -> `WebhookDelivery.handle` (encode,
durable outbox append) -> per-room queues -> signed aiohttp POST; the receiver is another process
(an aiohttp server that answers 200 and records when each event id arrived). Latency = arrival
time - the moment `publish` was called (wall clock, same machine).

Scenarios:
  paced    events at --rate for --seconds over --rooms rooms: p50/p90/p99/max latency, and the
           rate actually delivered. Target (issue 4): p99 <= 50 ms at 1000 events/s.
  burst    --burst events published at once over --rooms rooms: how fast the outbox drains.
  one-room the same burst in a single room: one ordered queue, one request at a time.
  backlog  --backlog events queued while the receiver is down (memory stays flat: records are
           paged from the store), then the receiver comes back: drain rate.
`--check` exits non-zero when the paced p99 misses the target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from livekit.protocol.models import Room

from lkserver.config import WebhookSettings
from lkserver.events import Event, EventBus, EventName
from lkserver.store import Store, open_store
from lkserver.webhooks import RetryPolicy, WebhookDelivery

KEY, SECRET = "APIbenchmark", "a-benchmark-secret-of-at-least-32-characters"


# -- the receiver process -----------------------------------------------------------------------

def serve_receiver(port: int) -> None:
    from aiohttp import web

    arrivals: list[tuple[str, float]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        t = time.time()
        # the id is the last field protojson writes before createdAt: cheap to find, no parse
        i = body.rfind(b'"id":"')
        arrivals.append((body[i + 6:body.index(b'"', i + 6)].decode(), t))
        return web.Response(text="ok")

    async def results(request: web.Request) -> web.Response:
        data = json.dumps(arrivals)
        arrivals.clear()
        return web.Response(text=data)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/results", results)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class Receiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-receiver", str(self.port)])
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("receiver did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)

    async def results(self, session: Any) -> list[tuple[str, float]]:
        async with session.get(f"http://127.0.0.1:{self.port}/results") as r:
            return [tuple(x) for x in json.loads(await r.text())]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] if s else float("nan")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the sender side (this process) -------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, store: Store, url: str,
                 policy: RetryPolicy | None = None) -> None:
        self.args = args
        self.store = store
        settings = WebhookSettings(api_key=KEY, urls=[url], request_timeout=5.0)
        self.engine = WebhookDelivery(settings, {KEY: SECRET}, store.outbox, policy=policy,
                                      max_in_flight=args.in_flight)
        self.bus = EventBus()
        self.bus.subscribe(self.engine.handle)
        self.sent: dict[str, float] = {}
        self.rooms = [Room(sid=f"RM_bench{i:07}", name=f"bench-room-{i}", empty_timeout=300,
                           departure_timeout=20, creation_time=1_724_000_000, num_participants=2,
                           metadata="benchmark")
                      for i in range(args.rooms)]

    def publish(self, i: int, rooms: int | None = None) -> None:
        room = self.rooms[i % (rooms or len(self.rooms))]
        ev = Event(EventName.ROOM_STARTED if i % 2 == 0 else EventName.ROOM_FINISHED, room=room)
        t = time.time()
        self.bus.publish(ev)
        self.sent[ev.id] = t

    async def paced(self, rate: float, seconds: float) -> float:
        """Publish at `rate` for `seconds`; returns the publishing rate achieved."""
        n = int(rate * seconds)
        t0 = time.perf_counter()
        i = 0
        while i < n:
            due = int((time.perf_counter() - t0) * rate) + 1
            while i < min(due, n):
                self.publish(i)
                i += 1
            await asyncio.sleep(0.001)
        return n / (time.perf_counter() - t0)

    async def wait_all(self, receiver: Receiver, session: Any, expect: int,
                       timeout: float = 300.0) -> list[tuple[str, float]]:
        got: dict[str, float] = {}
        deadline = time.time() + timeout
        while len(got) < expect and time.time() < deadline:
            await asyncio.sleep(0.2)
            for eid, t in await receiver.results(session):
                got.setdefault(eid, t)
        return list(got.items())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    out: dict[str, Any] = {"backend": args.backend, "rooms": args.rooms, "in_flight": args.in_flight}
    port = free_port()
    receiver = Receiver(port)
    receiver.start()
    tmp = tempfile.mkdtemp(prefix="bench-webhooks-")

    def store_for(name: str) -> Store:
        if args.backend == "redis":
            import redis

            host, p = args.redis.split(":")
            redis.Redis(host=host, port=int(p), db=args.redis_db).flushdb()
            return open_store("", args.redis, db=args.redis_db)
        return open_store(os.path.join(tmp, name))

    try:
        async with aiohttp.ClientSession() as session:
            # paced: latency at a sustained rate
            store = store_for("paced")
            b = Bench(args, store, f"http://127.0.0.1:{port}/hook")
            await b.engine.start()
            await b.paced(min(args.rate, 200), 1.0)  # warm up connections and code paths
            await b.wait_all(receiver, session, len(b.sent))
            b.sent.clear()
            t0 = time.perf_counter()
            published_rate = await b.paced(args.rate, args.seconds)
            got = await b.wait_all(receiver, session, len(b.sent))
            elapsed = time.perf_counter() - t0
            lat = [(t - b.sent[eid]) * 1000 for eid, t in got if eid in b.sent]
            out["paced"] = {
                "target_rate": args.rate, "published_rate": round(published_rate, 1),
                "delivered": len(lat), "published": len(b.sent),
                "delivered_rate": round(len(lat) / elapsed, 1),
                "p50_ms": round(pct(lat, 50), 2), "p90_ms": round(pct(lat, 90), 2),
                "p99_ms": round(pct(lat, 99), 2), "max_ms": round(max(lat), 2),
            }
            print("paced   ", out["paced"], flush=True)

            # burst: drain rate over many rooms, then in one room
            for name, rooms in (("burst", args.rooms), ("one_room", 1)):
                b.sent.clear()
                count = args.burst if rooms > 1 else max(1000, args.burst // 10)
                t0 = time.perf_counter()
                for i in range(count):
                    b.publish(i, rooms)
                t_pub = time.perf_counter() - t0
                got = await b.wait_all(receiver, session, count)
                t_all = max(t for _, t in got) - min(b.sent.values())
                out[name] = {"events": count, "rooms": rooms, "delivered": len(got),
                             "publish_per_s": round(count / t_pub),
                             "delivered_per_s": round(len(got) / t_all)}
                print(f"{name:8}", out[name], flush=True)
            await b.engine.stop()
            await store.close()

            # backlog: the receiver is down while events pile up, then it comes back
            if args.backlog:
                receiver.stop()
                store = store_for("backlog")
                b = Bench(args, store, f"http://127.0.0.1:{port}/hook",
                          policy=RetryPolicy(retry_for=3600, cap=2.0))
                await b.engine.start()
                rss0 = rss_mb()
                t0 = time.perf_counter()
                for i in range(args.backlog):
                    b.publish(i)
                    if i % 1000 == 999:
                        await asyncio.sleep(0)  # let the failing sender run meanwhile
                t_pub = time.perf_counter() - t0
                await asyncio.sleep(2.0)
                rss1 = rss_mb()
                receiver.start()
                t1 = time.perf_counter()
                got = await b.wait_all(receiver, session, args.backlog, timeout=600)
                t_drain = time.perf_counter() - t1
                out["backlog"] = {"events": args.backlog, "publish_per_s": round(args.backlog / t_pub),
                                  "rss_mb_before": round(rss0, 1), "rss_mb_queued": round(rss1, 1),
                                  "delivered": len(got), "drain_s": round(t_drain, 1),
                                  "drain_per_s": round(len(got) / t_drain)}
                print("backlog ", out["backlog"], flush=True)
                await b.engine.stop()
                await store.close()
    finally:
        receiver.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--burst", type=int, default=20000)
    ap.add_argument("--backlog", type=int, default=50000)
    ap.add_argument("--in-flight", type=int, default=32)
    ap.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    ap.add_argument("--redis", default="127.0.0.1:6379")
    ap.add_argument("--redis-db", type=int, default=9)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--check", action="store_true", help="fail when paced p99 > 50 ms")
    ap.add_argument("--serve-receiver", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_receiver:
        serve_receiver(args.serve_receiver)
        return
    res = asyncio.run(run(args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    if args.check and not (res["paced"]["p99_ms"] <= 50 and res["paced"]["delivered"] == res["paced"]["published"]):
        print(f"FAIL: p99 {res['paced']['p99_ms']} ms > 50 ms target", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
