"""Prometheus metrics, on their own port when `prometheus.port` is set (as LiveKit serves them).

One registry per server object (no process-wide state), so tests can run several servers.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.twirp_requests = Counter(
            "lkserver_twirp_requests", "Twirp requests by service, method and result code",
            ["service", "method", "code"], registry=self.registry)
        self.twirp_latency = Histogram(
            "lkserver_twirp_request_duration_seconds", "Twirp request handling time",
            ["service", "method"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.rooms = Gauge("lkserver_rooms", "Rooms hosted by this server", registry=self.registry)
        self.participants = Gauge("lkserver_participants", "Participants connected to this server",
                                  registry=self.registry)
        self._twirp_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def observe_twirp(self, service: str, method: str, code: str, seconds: float) -> None:
        # the labelled children, looked up once per (service, method, code): `labels()` validates
        # and hashes its arguments under a lock on every call. Bounded: the services, their
        # methods and the Twirp codes are fixed sets.
        children = self._twirp_children.get((service, method, code))
        if children is None:
            children = (self.twirp_requests.labels(service, method, code),
                        self.twirp_latency.labels(service, method))
            self._twirp_children[(service, method, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    def track_rooms(self, count_rooms: Callable[[], int], count_participants: Callable[[], int]) -> None:
        self.rooms.set_function(count_rooms)
        self.participants.set_function(count_participants)

    def track_media(self, stats: Callable[[], dict[str, int]]) -> None:
        """Media counters computed at scrape time from the SFU's own counters (no per-packet cost)."""
        self.registry.register(_MediaCollector(stats))

    def app(self, username: str = "", password: str = "") -> web.Application:
        """Serves the exposition on any path, with optional basic auth."""
        expected = ""
        if username and password:
            expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

        async def handle(request: web.Request) -> web.Response:
            if expected and not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
                return web.Response(status=401, text="Unauthorized",
                                    headers={"WWW-Authenticate": 'Basic realm="metrics"'})
            return web.Response(body=generate_latest(self.registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        return app


class _MediaCollector:
    NAMES = {
        "forwarded_packets": "RTP packets forwarded to subscribers",
        "forwarded_bytes": "RTP payload bytes forwarded to subscribers",
        "received_packets": "RTP packets received from publishers",
    }

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self.stats = stats

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.core import CounterMetricFamily

        values = self.stats()
        for key, doc in self.NAMES.items():
            yield CounterMetricFamily(f"lkserver_rtp_{key}", doc, value=values.get(key, 0))
