"""No event is lost: a receiver that is down, a server killed mid-delivery, a receiver that hangs.

Real server processes with webhook configs, driven through the official Python SDK; the receiver
is a real HTTP server recording what it accepts. The events the server must have emitted are
known from the API calls (each CreateRoom / DeleteRoom returns after its event is stored).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import ROOT, free_port
from whsink import Sink, arrivals, config, room_cycles, verify_official_python


def outbox_json(data_dir: object, *extra: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "lkserver", "webhook", "outbox", "--data-dir",
                          str(data_dir), "--json", *extra], capture_output=True, text=True,
                         cwd=str(ROOT), timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_receiver_down_30s_then_back_gets_every_event_in_room_order(server_factory) -> None:
    port = free_port()
    srv = server_factory(config=config([f"http://127.0.0.1:{port}/hook"]))
    began = time.time()
    rooms = ["down-a", "down-b", "down-c"]
    expected = room_cycles(srv.url, rooms, cycles=3)  # 6 events per room, 18 in all
    n = sum(len(v) for v in expected.values())

    # while the receiver is down everything waits in the outbox, with its failed attempts
    pending = outbox_json(srv.data_dir)
    assert sum(pending["pending_count"].values()) == n
    assert {p["key"] for p in pending["pending"]} == set(rooms)

    time.sleep(max(0.0, 30.0 - (time.time() - began)))
    sink = Sink(port).start()
    try:
        sink.wait_until(lambda: sum(len(v) for v in arrivals(sink).values()) >= n, timeout=120,
                        what=f"{n} events after the receiver came back")
        assert arrivals(sink) == expected, "every event, each room in its order"
        verify_official_python(sink.accepted())
    finally:
        sink.stop()
    assert sum(outbox_json(srv.data_dir)["pending_count"].values()) == 0


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_sigkill_during_delivery_then_restart_loses_nothing(server_factory, redis_url, backend) -> None:
    sink = Sink().start()
    sink.delay = 0.2  # slow enough that most events are still queued when the server dies
    try:
        top = f"redis:\n  address: {redis_url}\n  db: 5\n" if backend == "redis" else ""
        srv = server_factory(config=config([sink.url()], webhook_extra="request_timeout: 2",
                                           top_extra=top))
        expected = room_cycles(srv.url, ["kill-a", "kill-b"], cycles=8)  # 32 events
        n = sum(len(v) for v in expected.values())
        sink.wait_until(lambda: len(sink.accepted()) >= 3, what="the first deliveries")
        srv.kill()
        delivered_before = len({e["id"] for e in sink.events()})
        assert delivered_before < n, "the kill happened during delivery"

        srv.start()
        sink.wait_until(lambda: sum(len(v) for v in arrivals(sink).values()) >= n, timeout=90,
                        what=f"all {n} events after the restart")
        assert arrivals(sink) == expected, "every event at least once, each room in order"
        ids: dict[tuple[str, str], set[str]] = {}
        for e in sink.events():
            ids.setdefault((e["event"], e["room"]["sid"]), set()).add(e["id"])
        assert all(len(v) == 1 for v in ids.values()), "a redelivery carries the same event id"
        verify_official_python(sink.accepted())
    finally:
        sink.stop()


def test_receiver_that_never_answers_does_not_delay_another(server_factory) -> None:
    hung, good = Sink().start(), Sink().start()
    hung.hang = lambda c: True
    try:
        # no attempt to the hung receiver can time out during the test
        srv = server_factory(config=config([hung.url(), good.url()],
                                           webhook_extra="request_timeout: 120"))
        expected = room_cycles(srv.url, [f"indep-{i}" for i in range(6)], cycles=2)
        n = sum(len(v) for v in expected.values())
        good.wait_until(lambda: len(good.accepted()) >= n, timeout=60, what="the good receiver's events")
        assert arrivals(good) == expected
        assert hung.hanging >= 1 and hung.requests == [], "the other one is still holding requests"
    finally:
        hung.stop()
        good.stop()


def test_stuck_room_does_not_delay_other_rooms(server_factory) -> None:
    sink = Sink().start()
    sink.hang = lambda c: c.json()["room"]["name"] == "stuck"
    try:
        srv = server_factory(config=config([sink.url()], webhook_extra="request_timeout: 120"))
        room_cycles(srv.url, ["stuck"], cycles=1)
        sink.wait_until(lambda: sink.hanging == 1, what="the stuck room's first request")
        expected = room_cycles(srv.url, ["free-1", "free-2", "free-3"], cycles=2)
        sink.wait_until(lambda: len(sink.accepted()) >= 12, what="the other rooms' events")
        assert arrivals(sink) == expected
        assert sink.hanging == 1, "the stuck room's queue waits for its head: in order, one at a time"
    finally:
        sink.stop()


@pytest.mark.parametrize(("params", "expected_events"), [
    ("include_events: [room_finished]", ["room_finished"]),
    ("exclude_events: [room_started]", ["room_finished"]),
    ("include_events: [room_started]\nexclude_events: [room_started]", ["room_started"]),
], ids=["include", "exclude", "include-wins"])
def test_filter_params(server_factory, params: str, expected_events: list[str]) -> None:
    sink = Sink().start()
    try:
        wh = "filter_params:\n" + "\n".join("  " + line for line in params.splitlines())
        srv = server_factory(config=config([sink.url()], webhook_extra=wh))
        room_cycles(srv.url, ["filtered"], cycles=3)
        # one room is one ordered queue: once the last expected event is in, an event the filter
        # let through would have arrived before it
        sink.wait_until(lambda: len(sink.accepted()) >= 3, what="the filtered events")
        assert [e["event"] for e in sink.events()] == expected_events * 3
        assert sum(outbox_json(srv.data_dir)["pending_count"].values()) == 0
    finally:
        sink.stop()
