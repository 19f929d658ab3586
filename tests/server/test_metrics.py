"""Prometheus metrics on their own port (`prometheus.port`), with optional basic auth, as LiveKit."""

from __future__ import annotations

import base64

import aiohttp
import yaml
from conftest import API_KEY, API_SECRET, free_port, free_udp_port
from livekit import api
from prometheus_client.parser import text_string_to_metric_families


def config(prometheus: dict) -> str:
    return yaml.safe_dump({"keys": {API_KEY: API_SECRET}, "bind_addresses": ["127.0.0.1"],
                           "rtc": {"tcp_port": 0, "udp_port": free_udp_port()}, "prometheus": prometheus})


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def some_rpcs(url: str) -> None:
    async with api.LiveKitAPI(url, API_KEY, API_SECRET) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="m-1"))
        await lk.room.create_room(api.CreateRoomRequest(name="m-2"))
        await lk.room.list_rooms(api.ListRoomsRequest())
        try:
            await lk.room.delete_room(api.DeleteRoomRequest(room="m-none"))
        except api.TwirpError as e:
            assert e.code == "not_found"
    async with api.LiveKitAPI(url, API_KEY, "not-the-secret") as lk:
        try:
            await lk.room.list_rooms(api.ListRoomsRequest())
        except api.TwirpError as e:
            assert e.status == 401
        else:
            raise AssertionError("a token signed with the wrong secret was accepted")


async def test_metrics_after_rpcs(server_factory) -> None:
    port = free_port()
    s = server_factory(config=config({"port": port}))
    await some_rpcs(s.url)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
            m = samples(await resp.text())
        # any path serves the exposition, as LiveKit's promhttp handler
        async with session.get(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 200 and "lkserver_rooms" in await resp.text()
    label = (("code", "ok"), ("method", "CreateRoom"), ("service", "RoomService"))
    assert m[("lkserver_twirp_requests_total", label)] == 2
    assert m[("lkserver_twirp_requests_total", (("code", "ok"), ("method", "ListRooms"),
                                                ("service", "RoomService")))] == 1
    assert m[("lkserver_twirp_requests_total", (("code", "not_found"), ("method", "DeleteRoom"),
                                                ("service", "RoomService")))] == 1
    # refused for its token: counted too
    assert m[("lkserver_twirp_requests_total", (("code", "unauthenticated"), ("method", "ListRooms"),
                                                ("service", "RoomService")))] == 1
    latency = (("method", "CreateRoom"), ("service", "RoomService"))
    assert m[("lkserver_twirp_request_duration_seconds_count", latency)] == 2
    assert m[("lkserver_twirp_request_duration_seconds_sum", latency)] > 0
    assert m[("lkserver_twirp_request_duration_seconds_bucket", (("le", "+Inf"),) + latency)] == 2
    assert m[("lkserver_rooms", ())] == 2
    assert m[("lkserver_participants", ())] == 0
    # the main port does not serve metrics
    async with aiohttp.ClientSession() as session, session.get(f"{s.url}/metrics") as resp:
        assert resp.status == 404


async def test_metrics_basic_auth(server_factory) -> None:
    port = free_port()
    s = server_factory(config=config({"port": port, "username": "scraper", "password": "hunter2"}))
    await some_rpcs(s.url)
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            assert resp.status == 401 and "WWW-Authenticate" in resp.headers
        async with session.get(url, headers=basic("scraper", "wrong")) as resp:
            assert resp.status == 401
        async with session.get(url, headers=basic("someone", "hunter2")) as resp:
            assert resp.status == 401
        async with session.get(url, headers=basic("scraper", "hunter2")) as resp:
            assert resp.status == 200
            assert samples(await resp.text())[("lkserver_rooms", ())] == 2


async def test_deprecated_prometheus_port_key(server_factory) -> None:
    port = free_port()
    conf = yaml.safe_load(config({}))
    del conf["prometheus"]
    conf["prometheus_port"] = port
    s = server_factory(config=yaml.safe_dump(conf))
    await some_rpcs(s.url)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 200 and "lkserver_twirp_requests_total" in await resp.text()
