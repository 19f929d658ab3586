"""Dead letters: after webhook.retry_for (or at once for a refusal), with a log line, a metric,
the outbox tool's listing, and `--redeliver` to send them again to a running server."""

from __future__ import annotations

import urllib.request

from conftest import free_port
from test_webhook_durability import outbox_json
from whsink import Sink, config, room_cycles, verify_official_python


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))


def test_retry_for_then_dead_letter_then_redeliver(server_factory) -> None:
    sink = Sink().start()
    sink.status = lambda c: 503
    metrics_port = free_port()
    try:
        srv = server_factory(config=config(
            [sink.url()], webhook_extra="retry_for: 2\nrequest_timeout: 1",
            top_extra=f"prometheus:\n  port: {metrics_port}\n"))
        expected = room_cycles(srv.url, ["doomed"], cycles=1)
        sink.wait_until(lambda: "webhook_dead_lettered" in srv.log_text(), timeout=30,
                        what="the dead-letter log line")
        # retried with backoff until retry_for, then dead: and the queue behind it moves on
        sink.wait_until(lambda: len(outbox_json(srv.data_dir)["dead"]) == 2, timeout=30,
                        what="both events dead")
        line = next(x for x in srv.log_text().splitlines() if "webhook_dead_lettered" in x)
        assert "name=room_started" in line and "key=doomed" in line and "HTTP 503" in line
        assert metric(metrics_port, "lkserver_webhook_dead_letters_total") == 2
        dead = outbox_json(srv.data_dir)["dead"]
        assert [d["event"] for d in dead] == ["room_started", "room_finished"]
        assert all("HTTP 503" in d["last_error"] for d in dead)
        # retry_for counts from when an event was queued: the head was retried with backoff; the
        # event behind it, whose window ran out while it waited, still got its attempt
        assert dead[0]["attempts"] >= 2 and dead[1]["attempts"] >= 1
        attempts_seen = len(sink.requests)
        assert attempts_seen >= 3

        # the receiver is fixed: the tool moves the dead letters back, the running server sends
        sink.status = lambda c: 200
        after = outbox_json(srv.data_dir, "--redeliver")
        assert after["dead"] == [] and sum(after["pending_count"].values()) == 2
        sink.wait_until(lambda: len(sink.accepted()) >= 2, timeout=30, what="the redelivered events")
        got = sink.events()
        assert [(e["event"], e["room"]["sid"]) for e in got] == expected["doomed"]
        assert [e["id"] for e in got] == [d["id"] for d in dead]
        verify_official_python(sink.accepted())
        assert sum(outbox_json(srv.data_dir)["pending_count"].values()) == 0
    finally:
        sink.stop()


def test_refused_request_is_dead_lettered_at_once(server_factory) -> None:
    """A 4xx other than 408/429 will not get better by retrying (LiveKit counts it as sent);
    lkserver keeps it as a dead letter, and the room's next events still go out."""
    sink = Sink().start()
    sink.status = lambda c: 400 if c.json()["event"] == "room_started" else 200
    try:
        srv = server_factory(config=config([sink.url()]))
        expected = room_cycles(srv.url, ["refused"], cycles=1)
        sink.wait_until(lambda: len(sink.accepted()) >= 1, what="room_finished")
        assert [e["event"] for e in sink.events()] == ["room_finished"]
        assert len(sink.requests) == 2, "one attempt each"
        dead = outbox_json(srv.data_dir)["dead"]
        assert [(d["event"], d["attempts"], d["last_error"]) for d in dead] == [
            ("room_started", 1, "HTTP 400")]
        assert expected["refused"][0][0] == "room_started"
    finally:
        sink.stop()
