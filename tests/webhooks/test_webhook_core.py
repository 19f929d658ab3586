"""The sans-I/O webhook core: body encoding, signing headers, EventKey, destinations, retries."""

from __future__ import annotations

import base64
import hashlib
import json

import livekit.api as official
import pytest
from google.protobuf.json_format import MessageToJson
from livekit.protocol.egress import EgressInfo
from livekit.protocol.ingress import IngressInfo
from livekit.protocol.models import ParticipantInfo, Room, TrackInfo, WebhookConfig
from livekit.protocol.webhook import WebhookEvent

from lkserver.webhooks import core


def test_body_is_default_protojson_compact_utf8() -> None:
    ev = WebhookEvent(event="room_started", id="EV_x", created_at=1_724_000_000,
                      room=Room(sid="RM_x", name="ü ☃", empty_timeout=300, creation_time=5))
    body = core.encode_event(ev)
    assert body == ('{"event":"room_started","room":{"sid":"RM_x","name":"ü ☃","emptyTimeout":300,'
                    '"creationTime":"5"},"id":"EV_x","createdAt":"1724000000"}').encode()
    assert json.loads(body) == json.loads(MessageToJson(ev))


def test_headers_sign_the_exact_body() -> None:
    body = b'{"event":"room_finished"}'
    h = core.request_headers(body, "APIk", "a-secret-for-the-webhook-core-test!!")
    assert h["Content-Type"] == "application/webhook+json" and h["User-Agent"] == "LiveKit"
    claims = official.TokenVerifier("APIk", "a-secret-for-the-webhook-core-test!!").verify(h["Authorization"])
    assert claims.sha256 == base64.b64encode(hashlib.sha256(body).digest()).decode()


@pytest.mark.parametrize(("event", "key"), [
    (WebhookEvent(egress_info=EgressInfo(egress_id="EG_1"), room=Room(name="r")), "EG_1"),
    (WebhookEvent(ingress_info=IngressInfo(ingress_id="IN_1"), room=Room(name="r")), "IN_1"),
    (WebhookEvent(room=Room(name="r"), participant=ParticipantInfo(identity="p")), "r"),
    (WebhookEvent(participant=ParticipantInfo(identity="p"), track=TrackInfo(sid="TR_1")), "p"),
    (WebhookEvent(track=TrackInfo(sid="TR_1")), "TR_1"),
    (WebhookEvent(event="x"), "default"),
])
def test_event_key_is_livekits(event: WebhookEvent, key: str) -> None:
    assert core.event_key(event) == key


def test_destinations_filter_applies_to_configured_urls_only() -> None:
    extra = [WebhookConfig(url="http://x/", signing_key="APIx"), WebhookConfig(url="http://y/"),
             WebhookConfig(url="")]
    only_finished = core.EventFilter({"include_events": ["room_finished"]})
    assert core.destinations("room_started", ["http://a/"], "APIk", only_finished, extra) == [
        core.Destination("http://x/", "APIx"), core.Destination("http://y/", "APIk")]
    assert core.destinations("room_finished", ["http://a/", "http://a/"], "APIk", only_finished) == [
        core.Destination("http://a/", "APIk")]
    both = core.EventFilter({"include_events": ["room_started"], "exclude_events": ["room_started"]})
    assert both.allows("room_started") and not both.allows("room_finished")
    exclude = core.EventFilter({"exclude_events": ["track_published"]})
    assert not exclude.allows("track_published") and exclude.allows("track_unpublished")
    assert core.EventFilter({}).allows("anything")


@pytest.mark.parametrize(("status", "outcome"), [
    (200, "delivered"), (204, "delivered"), (301, "rejected"), (400, "rejected"), (401, "rejected"),
    (404, "rejected"), (408, "retry"), (429, "retry"), (500, "retry"), (501, "rejected"),
    (502, "retry"), (503, "retry"),
])
def test_status_outcomes(status: int, outcome: str) -> None:
    assert core.classify_status(status).value == outcome


def test_retry_policy_backs_off_with_jitter_until_the_window_ends() -> None:
    p = core.RetryPolicy(retry_for=100.0, base=0.5, cap=30.0, jitter=0.5)
    assert [p.delay(n, 0.0) for n in (1, 2, 3, 7, 8, 50)] == [0.5, 1.0, 2.0, 30.0, 30.0, 30.0]
    assert p.delay(3, 1.0) == 1.0, "jitter takes off up to half"
    R, D, A = core.Outcome.RETRY, core.Action.DEAD, core.Action.RETRY
    d = p.decide(R, "HTTP 503", 1, enqueued_at=0.0, now=10.0, rand=0.0)
    assert d.action is A and d.ready_at == 10.5 and d.reason == "HTTP 503"
    assert p.decide(R, "x", 9, enqueued_at=0.0, now=90.0, rand=0.0).ready_at == 100.0, \
        "the last attempt is at the end of the window"
    dead = p.decide(R, "HTTP 503", 12, enqueued_at=0.0, now=100.0, rand=0.0)
    assert dead.action is D and "retried for 100s" in dead.reason
    assert p.decide(core.Outcome.REJECTED, "HTTP 400", 1, 0.0, 1.0, 0.0).action is D
    assert p.decide(core.Outcome.DELIVERED, "", 1, 0.0, 1.0, 0.0).action is core.Action.ACK
