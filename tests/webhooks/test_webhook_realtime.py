"""Participant and track webhooks from a real participant: the official Python realtime SDK
(`livekit` on PyPI) joins, publishes a microphone track, unpublishes it and leaves; the official
receivers accept every webhook the server sent, in the room's order.

Runs in the WebRTC test network namespace (scripts/in-netns.sh; `make test` uses it).
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from livekit import api, rtc
from whsink import (
    KEY,
    SECRET,
    Sink,
    await_until,
    config,
    verify_official_node,
    verify_official_python,
)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_participant_and_track_webhooks_from_a_real_client(server_factory) -> None:
    if os.environ.get("LKSERVER_NETNS") != "1":
        pytest.fail("needs the WebRTC test network namespace: run through scripts/in-netns.sh "
                    "(make test does this)")
    sink = Sink().start()
    try:
        rtc_section = (f"rtc:\n  udp_port: {free_udp_port()}\n  tcp_port: 0\n"
                       "  node_ip: 127.0.0.1\n")
        srv = server_factory(config=config([sink.url()], top_extra=rtc_section))
        token = (api.AccessToken(KEY, SECRET).with_identity("alice").with_name("Alice")
                 .with_grants(api.VideoGrants(room_join=True, room="rt-hooks")).to_jwt())
        room = rtc.Room()
        await room.connect(srv.ws_url, token)
        source = rtc.AudioSource(48000, 1)
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        pub = await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        await await_until(lambda: "track_published" in [e["event"] for e in sink.events()],
                          timeout=30, what="track_published")
        await room.local_participant.unpublish_track(pub.sid)
        await await_until(lambda: "track_unpublished" in [e["event"] for e in sink.events()],
                          timeout=30, what="track_unpublished")
        await room.disconnect()
        await await_until(lambda: "participant_left" in [e["event"] for e in sink.events()],
                          timeout=30, what="participant_left")

        events = sink.events()
        assert [e["event"] for e in events] == [
            "room_started", "participant_joined", "track_published", "track_unpublished",
            "participant_left"]
        joined, published, unpublished, left = (verify_official_python(sink.accepted())[1:])
        assert joined.participant.identity == "alice" and joined.room.name == "rt-hooks"
        assert published.track.sid == pub.sid == unpublished.track.sid
        assert published.participant.identity == "alice"
        assert left.participant.state == left.participant.DISCONNECTED
        assert all(n["ok"] for n in verify_official_node(sink.accepted()))
    finally:
        sink.stop()
        await asyncio.sleep(0)
