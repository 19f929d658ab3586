"""lkserver's webhook requests, judged by the official receivers (livekit-api, livekit-server-sdk).

Events the server emits today (room_started, room_finished) come from a real server process
driven by the official Python SDK; every other kind LiveKit emits (participant, track, egress,
ingress) is built as the domain will publish it and sent through the real delivery engine and
outbox, so its encoding and signature are proven too (reference server-api.md §5.1-5.3).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jwt
import livekit.api as official
from google.protobuf.json_format import MessageToDict, MessageToJson, Parse
from livekit.protocol import egress as proto_egress
from livekit.protocol import ingress as proto_ingress
from livekit.protocol.models import (
    DisconnectReason,
    ParticipantInfo,
    ParticipantPermission,
    Room,
    SimulcastCodecInfo,
    TrackInfo,
    TrackSource,
    TrackType,
    VideoLayer,
    WebhookConfig,
)
from livekit.protocol.webhook import WebhookEvent
from whsink import (
    KEY,
    OTHER_KEY,
    OTHER_SECRET,
    SECRET,
    Captured,
    Sink,
    await_until,
    config,
    verify_official_node,
    verify_official_python,
)

from lkserver.config import WebhookSettings
from lkserver.events import Event, EventBus, EventName
from lkserver.store import open_store
from lkserver.webhooks import WebhookDelivery


def assert_livekit_request(c: Captured, key: str = KEY, secret: str = SECRET) -> None:
    """The request is shaped exactly as LiveKit's notifier sends it."""
    assert c.headers["Content-Type"] == "application/webhook+json"
    assert c.headers["User-Agent"] == "LiveKit"
    assert c.auth and not c.auth.lower().startswith("bearer"), "Authorization is the bare JWT"
    claims = jwt.decode(c.auth, secret, algorithms=["HS256"], issuer=key)
    assert set(claims) == {"iss", "nbf", "iat", "exp", "sha256"}
    assert claims["exp"] - claims["nbf"] == 300
    doc = json.loads(c.body)
    # protojson with default options: what protobuf's own MessageToJson makes of the same event
    assert doc == json.loads(MessageToJson(Parse(c.body, WebhookEvent())))
    # compact, UTF-8 as is
    assert c.body == json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    assert doc["id"].startswith("EV_") and int(doc["createdAt"]) > 0

    def keys(x: object) -> list[str]:
        if isinstance(x, dict):
            return [k for k in x] + [k2 for v in x.values() for k2 in keys(v)]
        if isinstance(x, list):
            return [k2 for v in x for k2 in keys(v)]
        return []

    assert not [k for k in keys(doc) if "_" in k], "keys are lowerCamelCase"


def test_server_room_events_accepted_by_official_receivers(server_factory) -> None:
    sink = Sink().start()
    try:
        srv = server_factory(config=config([sink.url("/lk/hook")]))

        async def calls() -> Room:
            async with official.LiveKitAPI(srv.url, KEY, SECRET) as lk:
                room = await lk.room.create_room(
                    official.CreateRoomRequest(name="interop-ü", metadata="snow ☃", empty_timeout=60))
                await lk.room.delete_room(official.DeleteRoomRequest(room=room.name))
                return room

        room = asyncio.run(calls())
        sink.wait_until(lambda: len(sink.accepted()) >= 2, what="room_started and room_finished")
        caps = sink.accepted()
        assert [c.json()["event"] for c in caps] == ["room_started", "room_finished"]
        assert {c.path for c in caps} == {"/lk/hook"}
        for c in caps:
            assert_livekit_request(c)

        started, finished = verify_official_python(caps)
        assert started.event == "room_started" and finished.event == "room_finished"
        for ev in (started, finished):
            assert ev.room.sid == room.sid and ev.room.name == "interop-ü"
            assert ev.room.metadata == "snow ☃" and ev.room.empty_timeout == 60
        assert started.id != finished.id
        doc = caps[0].json()
        assert "numParticipants" not in doc["room"], "zero values are left out"
        assert doc["room"]["creationTime"] == str(room.creation_time), "int64 as a string"

        node = verify_official_node(caps)
        assert [n["ok"] for n in node] == [True, True], node
        assert [n["event"] for n in node] == ["room_started", "room_finished"]
        assert [n["id"] for n in node] == [started.id, finished.id]
    finally:
        sink.stop()


def every_event_kind(extra: list[WebhookConfig]) -> list[Event]:
    """One event of each kind LiveKit's server emits, with the payloads it sets (§5.1)."""
    room = Room(sid="RM_interopRoom1", name="kinds", num_participants=1, creation_time=1_724_000_000,
                creation_time_ms=1_724_000_000_123, empty_timeout=300, departure_timeout=20,
                metadata="ü")
    minimal_room = Room(sid=room.sid, name=room.name)
    alice = ParticipantInfo(
        sid="PA_interopAlice", identity="alice", name="Alice", state=ParticipantInfo.State.ACTIVE,
        joined_at=1_724_000_001, joined_at_ms=1_724_000_001_500, attributes={"team": "blue"},
        permission=ParticipantPermission(can_publish=True, can_subscribe=True,
                                         can_publish_sources=[TrackSource.MICROPHONE]),
        kind=ParticipantInfo.Kind.STANDARD, is_publisher=True)
    left = ParticipantInfo()
    left.CopyFrom(alice)
    left.state = ParticipantInfo.State.DISCONNECTED
    left.disconnect_reason = DisconnectReason.CLIENT_INITIATED
    aborted = ParticipantInfo(sid="PA_interopBob", identity="bob",
                              state=ParticipantInfo.State.DISCONNECTED,
                              disconnect_reason=DisconnectReason.JOIN_FAILURE)
    minimal_alice = ParticipantInfo(sid=alice.sid, identity=alice.identity)
    track = TrackInfo(sid="TR_interopVideo", type=TrackType.VIDEO, name="camera", width=1280,
                      height=720, simulcast=True, source=TrackSource.CAMERA, mime_type="video/VP8",
                      layers=[VideoLayer(quality=0, width=640, height=360, bitrate=300_000)],
                      codecs=[SimulcastCodecInfo(mime_type="video/VP8", mid="1")])
    eg = proto_egress.EgressInfo(
        egress_id="EG_interopEgress", room_id=room.sid, room_name=room.name,
        status=proto_egress.EgressStatus.EGRESS_STARTING, started_at=1_724_000_002_000_000_000,
        room_composite=proto_egress.RoomCompositeEgressRequest(room_name=room.name, layout="grid"))
    eg_active = proto_egress.EgressInfo()
    eg_active.CopyFrom(eg)
    eg_active.status = proto_egress.EgressStatus.EGRESS_ACTIVE
    eg_done = proto_egress.EgressInfo()
    eg_done.CopyFrom(eg)
    eg_done.status = proto_egress.EgressStatus.EGRESS_COMPLETE
    eg_done.ended_at = 1_724_000_100_000_000_000
    eg_done.file_results.append(proto_egress.FileInfo(filename="kinds.mp4", size=123_456,
                                                      duration=98_000_000_000))
    eg_room = Room(sid=room.sid, name=room.name)
    ing = proto_ingress.IngressInfo(
        ingress_id="IN_interopIngress", name="obs", stream_key="sk", url="rtmp://localhost/x",
        input_type=proto_ingress.IngressInput.RTMP_INPUT, room_name=room.name,
        participant_identity="streamer",
        state=proto_ingress.IngressState(status=proto_ingress.IngressState.Status.ENDPOINT_PUBLISHING,
                                         room_id=room.sid, started_at=1_724_000_003))
    ing_done = proto_ingress.IngressInfo()
    ing_done.CopyFrom(ing)
    ing_done.state.status = proto_ingress.IngressState.Status.ENDPOINT_INACTIVE
    ing_room = Room(name=room.name)
    return [
        Event(EventName.ROOM_STARTED, room=room),
        Event(EventName.PARTICIPANT_JOINED, room=room, participant=alice),
        Event(EventName.TRACK_PUBLISHED, room=minimal_room, participant=minimal_alice, track=track),
        Event(EventName.TRACK_UNPUBLISHED, room=minimal_room, participant=minimal_alice, track=track),
        Event(EventName.PARTICIPANT_LEFT, room=room, participant=left),
        Event(EventName.PARTICIPANT_CONNECTION_ABORTED, room=room, participant=aborted),
        Event(EventName.EGRESS_STARTED, room=eg_room, egress_info=eg, extra_webhooks=extra),
        Event(EventName.EGRESS_UPDATED, room=eg_room, egress_info=eg_active, extra_webhooks=extra),
        Event(EventName.EGRESS_ENDED, room=eg_room, egress_info=eg_done, extra_webhooks=extra),
        Event(EventName.INGRESS_STARTED, room=ing_room, ingress_info=ing),
        Event(EventName.INGRESS_ENDED, room=ing_room, ingress_info=ing_done),
        Event(EventName.ROOM_FINISHED, room=room),
    ]


async def test_every_event_kind_accepted_by_official_receivers(tmp_path: Path) -> None:
    main, per_request_named, per_request_default = Sink().start(), Sink().start(), Sink().start()
    store = open_store(str(tmp_path))
    engine = WebhookDelivery(WebhookSettings(api_key=KEY, urls=[main.url()]),
                             {KEY: SECRET, OTHER_KEY: OTHER_SECRET}, store.outbox)
    bus = EventBus()
    bus.subscribe(engine.handle)
    await engine.start()
    try:
        extra = [WebhookConfig(url=per_request_named.url(), signing_key=OTHER_KEY),
                 WebhookConfig(url=per_request_default.url())]
        events = every_event_kind(extra)
        assert {e.name for e in events} == set(EventName), "every kind LiveKit emits"
        for e in events:
            bus.publish(e)
        await await_until(lambda: len(main.accepted()) == len(events)
                          and len(per_request_named.accepted()) == 3
                          and len(per_request_default.accepted()) == 3, what="every event")
        caps = main.accepted()
        # one resource queue each: room/participant/track events in the order published
        room_order = [c.json()["event"] for c in caps if c.json()["event"].split("_")[0]
                      in ("room", "participant", "track")]
        assert room_order == [str(e.name) for e in events if e.name.split("_")[0]
                              in ("room", "participant", "track")]
        for c in caps:
            assert_livekit_request(c)
        by_id = {e.id: e for e in events}
        for received in verify_official_python(caps):
            sent = by_id[received.id].to_webhook_event()
            assert received == sent, f"{received.event} arrives as it was published"
        node = verify_official_node(caps)
        assert all(n["ok"] for n in node), [n for n in node if not n["ok"]]
        for n in node:
            # protobuf-es reads exactly the message protobuf-python wrote
            assert n["json"] == MessageToDict(by_id[n["id"]].to_webhook_event())

        # per-request WebhookConfig: egress events only, signed with the key it names, or with
        # webhook.api_key when it names none
        named = per_request_named.accepted()
        assert [c.json()["event"] for c in named] == ["egress_started", "egress_updated", "egress_ended"]
        for c in named:
            assert_livekit_request(c, OTHER_KEY, OTHER_SECRET)
        assert [e.egress_info.status for e in verify_official_python(named, OTHER_KEY, OTHER_SECRET)] == [
            proto_egress.EgressStatus.EGRESS_STARTING, proto_egress.EgressStatus.EGRESS_ACTIVE,
            proto_egress.EgressStatus.EGRESS_COMPLETE]
        assert all(n["ok"] for n in verify_official_node(named, OTHER_KEY, OTHER_SECRET))
        default = per_request_default.accepted()
        assert [e.event for e in verify_official_python(default)] == [
            "egress_started", "egress_updated", "egress_ended"]
        assert all(n["ok"] for n in verify_official_node(default))
        # a receiver holding another key refuses them: the signature really is per key
        refused = verify_official_node(named)
        assert not any(n["ok"] for n in refused)
    finally:
        await engine.stop()
        await store.close()
        for s in (main, per_request_named, per_request_default):
            s.stop()


async def test_unknown_signing_key_is_dead_lettered_not_sent(tmp_path: Path) -> None:
    """LiveKit refuses to notify with an unknown signing key; lkserver keeps a dead letter."""
    sink = Sink().start()
    store = open_store(str(tmp_path))
    engine = WebhookDelivery(WebhookSettings(api_key=KEY), {KEY: SECRET}, store.outbox)
    bus = EventBus()
    bus.subscribe(engine.handle)
    await engine.start()
    try:
        ev = Event(EventName.EGRESS_STARTED,
                   egress_info=proto_egress.EgressInfo(egress_id="EG_unknownKey", room_name="r"),
                   extra_webhooks=[WebhookConfig(url=sink.url(), signing_key="APInobody")])
        bus.publish(ev)
        dead = []
        for _ in range(500):
            dead = await store.outbox.dead(10)
            if dead:
                break
            await asyncio.sleep(0.02)
        assert [d.event_id for d in dead] == [ev.id]
        assert "no secret for provided signing key" in dead[0].last_error
        assert sink.requests == []
    finally:
        await engine.stop()
        await store.close()
        sink.stop()
