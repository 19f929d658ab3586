"""Helpers for the webhook tests: a recording receiver, the official verifiers, server configs.

`Sink` is a real HTTP receiver (aiohttp, in its own thread and event loop, so tests stay plain
functions while servers run as processes). It keeps every request exactly as received and can
be told to answer with another status, to answer late, or never to answer.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import livekit.api as official
from aiohttp import web
from conftest import run_node

KEY, SECRET = "APIwebhooks", "a-webhook-test-secret-of-at-least-32-chars"
OTHER_KEY, OTHER_SECRET = "APIother", "another-webhook-secret-of-32-characters-plus"


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.time)

    @property
    def auth(self) -> str:
        return self.headers.get("Authorization", "")

    def json(self) -> dict:
        return json.loads(self.body)


class Sink:
    """A webhook receiver on 127.0.0.1 that records what it gets.

    `status(captured) -> int` decides the answer (default 200); `hang(captured) -> bool` makes a
    request wait until the sink stops; `delay` seconds before answering.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.requests: list[Captured] = []
        self.status: Callable[[Captured], int] = lambda c: 200
        self.hang: Callable[[Captured], bool] = lambda c: False
        self.delay = 0.0
        self.hanging = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._release: asyncio.Event | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Sink:
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main(ready)), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("webhook sink did not start")
        return self

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        await self._stop.wait()
        self._release.set()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        c = Captured(request.path, dict(request.headers), body, 0)
        if self.hang(c):
            with self._lock:
                self.hanging += 1
            assert self._release is not None
            await self._release.wait()
            return web.Response(status=503)
        if self.delay:
            await asyncio.sleep(self.delay)
        c.status = self.status(c)
        with self._lock:
            self.requests.append(c)
        return web.Response(status=c.status, text="ok")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def accepted(self) -> list[Captured]:
        with self._lock:
            return [c for c in self.requests if 200 <= c.status < 300]

    def events(self) -> list[dict]:
        return [c.json() for c in self.accepted()]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 60.0,
                   what: str = "condition") -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; "
                             f"received: {[(e['event'], e.get('room', {}).get('name')) for e in self.events()]}")


def config(urls: list[str], *, webhook_extra: str = "", top_extra: str = "") -> str:
    """A server config with the test keys and these webhook URLs."""
    lines = [
        "keys:",
        f"  {KEY}: {SECRET}",
        f"  {OTHER_KEY}: {OTHER_SECRET}",
        "webhook:",
        f"  api_key: {KEY}",
        "  urls: [" + ", ".join(json.dumps(u) for u in urls) + "]",
    ]
    lines += ["  " + line for line in webhook_extra.strip().splitlines() if line.strip()]
    return "\n".join(lines) + "\n" + top_extra


def verify_official_python(captured: list[Captured], key: str = KEY, secret: str = SECRET) -> list:
    """Each request through livekit-api's WebhookReceiver (raises on the first it refuses)."""
    receiver = official.WebhookReceiver(official.TokenVerifier(key, secret))
    return [receiver.receive(c.body.decode("utf-8"), c.auth) for c in captured]


def verify_official_node(captured: list[Captured], key: str = KEY, secret: str = SECRET) -> list[dict]:
    """Each request through livekit-server-sdk's WebhookReceiver; its verdicts."""
    reqs = [{"body": c.body.decode("utf-8"), "auth": c.auth, "key": key, "secret": secret}
            for c in captured]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(reqs, f)
    res = run_node("webhook_verify_many.mjs", f.name)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


async def await_until(predicate: Callable[[], bool], timeout: float = 60.0,
                      what: str = "condition") -> None:
    """`Sink.wait_until` for tests whose event loop runs the sender (in-process engines)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def with_api(url: str, fn: Callable) -> object:
    """Run `await fn(lk)` with an official `livekit.api.LiveKitAPI` for the test keys."""

    async def go() -> object:
        async with official.LiveKitAPI(url, KEY, SECRET) as lk:
            return await fn(lk)

    return asyncio.run(go())


def room_cycles(url: str, rooms: list[str], cycles: int) -> dict[str, list[tuple[str, str]]]:
    """Create and delete each room `cycles` times through the official SDK; per room, the
    (event, room sid) pairs the server must have emitted, in order."""
    order: dict[str, list[tuple[str, str]]] = {r: [] for r in rooms}

    async def fn(lk: official.LiveKitAPI) -> None:
        for _ in range(cycles):
            for r in rooms:
                room = await lk.room.create_room(official.CreateRoomRequest(name=r))
                order[r].append(("room_started", room.sid))
            for r in rooms:
                await lk.room.delete_room(official.DeleteRoomRequest(room=r))
                order[r].append(("room_finished", order[r][-1][1]))

    with_api(url, fn)
    return order


def arrivals(sink: Sink) -> dict[str, list[tuple[str, str]]]:
    """Per room, the (event, room sid) pairs accepted, in arrival order, each event id once."""
    seen: set[str] = set()
    out: dict[str, list[tuple[str, str]]] = {}
    for e in sink.events():
        if e["id"] in seen:
            continue  # at-least-once: a repeat is allowed, it is the same event
        seen.add(e["id"])
        out.setdefault(e["room"]["name"], []).append((e["event"], e["room"]["sid"]))
    return out
