"""RTMP ingress end to end: ffmpeg publishes like OBS, the official Python SDK watches the room.

Checked by content (the tone's frequency by FFT, decoded frame sizes), in the records
(ListIngress: PUBLISHING with the input's state, then INACTIVE), in the room (the ingress
participant: kind, name, metadata, attributes, simulcast layers) and in the webhooks
(ingress_started / ingress_ended once each, verified by livekit-api's receiver). Refusals come
back to the encoder as RTMP errors; malformed bytes close only their own connection.
"""

from __future__ import annotations

import asyncio
import socket
import time

from ingressfix import (
    WebhookRecorder,
    disconnected,
    dump,
    ingress_failures,
    ingress_info,
    lkapi,
    poll,
    push_rtmp,
    py_client,
    simulcast_seen,
    start_ingress_server,
    token,
    tone_and_sizes,
    wait_exit,
)

from lkserver import api
from lkserver.ingress.rtmp import HANDSHAKE_SIZE


def rtmp_create(room: str, identity: str, **kw) -> api.CreateIngressRequest:
    return api.CreateIngressRequest(input_type=api.IngressInput.RTMP_INPUT, room_name=room,
                                    participant_identity=identity, **kw)


async def test_rtmp_push_heard_and_seen(tmp_path):
    hooks = await WebhookRecorder().start()
    server = start_ingress_server(tmp_path / "srv", hooks.url)
    try:
        async with lkapi(server) as lk:
            info = await lk.ingress.create_ingress(rtmp_create(
                "stage", "obs", name="studio", participant_name="OBS Studio", participant_metadata='{"cam":1}'))
            assert info.url.startswith("rtmp://127.0.0.1:") and info.url.endswith("/x")
            viewer = asyncio.ensure_future(py_client(server, token("viewer", "stage"), "--seconds", "9"))
            encoder = push_rtmp(f"{info.url}/{info.stream_key}", 13, hz=660)
            live = await poll(lambda: ingress_info(lk, info.ingress_id),
                              lambda i: i.state.status == api.IngressState.ENDPOINT_PUBLISHING
                              and i.state.video.width and i.state.audio.sample_rate and len(i.state.tracks) == 2,
                              what="PUBLISHING with the input state")
            parts = await poll(lambda: lk.room.list_participants(api.ListParticipantsRequest(room="stage")),
                               lambda r: any(p.identity == "obs" and len(p.tracks) == 2 for p in r.participants),
                               what="the ingress participant's two tracks")
            report = await viewer
            code, err = await wait_exit(encoder)
            assert code == 0, err
            ended = await poll(lambda: ingress_info(lk, info.ingress_id),
                               lambda i: i.state.status == api.IngressState.ENDPOINT_INACTIVE, what="INACTIVE")
            await poll(lambda: asyncio.sleep(0, hooks.ingress_events(info.ingress_id)),
                       lambda ev: len(ev) >= 2, what="two ingress webhooks")
    finally:
        server.stop()
        await hooks.stop()

    # the viewer heard the tone and saw the top layer
    peak, sizes = tone_and_sizes(report, "obs")
    assert abs(peak - 660) < 5, dump(report)
    assert simulcast_seen(sizes, "1280x720", ["1280x720", "640x360", "320x180"]), dump(report)
    # the record while live: what the encoder sends, and the published tracks
    st = live.state
    assert st.video.mime_type == "video/H264" and (st.video.width, st.video.height) == (1280, 720)
    assert 25 <= st.video.framerate <= 35
    assert st.audio.mime_type == "audio/aac" and st.audio.sample_rate == 44100 and st.audio.channels == 2
    assert st.started_at and st.resource_id.startswith("RT_") and st.room_id.startswith("RM_")
    video = next(t for t in st.tracks if t.type == api.TrackType.VIDEO)
    assert video.mime_type == "video/H264" and video.simulcast
    assert [(v.width, v.height) for v in video.layers] == [(1280, 720), (640, 360), (320, 180)]
    audio = next(t for t in st.tracks if t.type == api.TrackType.AUDIO)
    assert audio.mime_type == "audio/opus" and audio.stereo
    # the room's view of the ingress participant
    obs = next(p for p in parts.participants if p.identity == "obs")
    assert obs.kind == api.ParticipantInfo.Kind.INGRESS and obs.name == "OBS Studio" and obs.metadata == '{"cam":1}'
    assert obs.attributes["ingress.ingressID"] == info.ingress_id
    assert obs.attributes["ingress.resourceID"] == st.resource_id
    # after the encoder stopped: a reusable ingress is INACTIVE again, the session's times kept
    assert ended.state.ended_at >= ended.state.started_at == st.started_at and not ended.state.error
    # webhooks on status changes only: started (PUBLISHING), ended (INACTIVE); none for BUFFERING
    assert hooks.ingress_events(info.ingress_id) == ["ingress_started", "ingress_ended"], hooks.events
    started = next(e for e in hooks.events if e.event == "ingress_started")
    assert started.room.name == "stage" and started.ingress_info.state.status == api.IngressState.ENDPOINT_PUBLISHING
    assert ingress_failures(server.log_text()) == []


async def test_rtmp_refusals(tmp_path):
    server = start_ingress_server(tmp_path / "srv", ingress="max_transcoding_sessions: 1")
    try:
        async with lkapi(server) as lk:
            ok = await lk.ingress.create_ingress(rtmp_create("r", "p"))
            off = await lk.ingress.create_ingress(rtmp_create("r", "q", enabled=False))
            whip = await lk.ingress.create_ingress(api.CreateIngressRequest(
                input_type=api.IngressInput.WHIP_INPUT, room_name="r", participant_identity="w"))
            base = ok.url
            cases = {"WRONGKEY123": "ingress does not exist", off.stream_key: "session is disabled",
                     whip.stream_key: "invalid ingress type"}
            results = {}
            for key in cases:
                results[key] = await wait_exit(push_rtmp(f"{base}/{key}", 5), 30)
            for key, message in cases.items():
                code, err = results[key]
                assert code != 0 and message in err, (key, code, err)
            # none of them started a session
            for i in (await lk.ingress.list_ingress(api.ListIngressRequest())).items:
                assert i.state.status == api.IngressState.ENDPOINT_INACTIVE and not i.state.resource_id
            # over the transcoding budget (one session here): the second encoder is refused
            busy = await lk.ingress.create_ingress(rtmp_create("r", "busy"))
            first = push_rtmp(f"{base}/{busy.stream_key}", 12, size="320x240")
            await poll(lambda: ingress_info(lk, busy.ingress_id),
                       lambda i: i.state.status == api.IngressState.ENDPOINT_PUBLISHING, what="PUBLISHING")
            over = await wait_exit(push_rtmp(f"{base}/{ok.stream_key}", 5), 30)
            first.kill()
            await wait_exit(first)
            await poll(lambda: ingress_info(lk, busy.ingress_id),
                       lambda i: i.state.status != api.IngressState.ENDPOINT_PUBLISHING, what="the first one's end")
            # a codec FLV can carry but lkserver does not ingest: the session ends in ERROR, and
            # an update of the ingress resets it to INACTIVE (as LiveKit's UpdateIngress)
            code, err = await wait_exit(push_rtmp(f"{base}/{ok.stream_key}", 5, size="320x240",
                                                  extra=["-c:v", "flv1"]), 30)
            failed = await poll(lambda: ingress_info(lk, ok.ingress_id),
                                lambda i: i.state.status == api.IngressState.ENDPOINT_ERROR, what="ERROR")
            reset = await lk.ingress.update_ingress(api.UpdateIngressRequest(ingress_id=ok.ingress_id, name="again"))
    finally:
        server.stop()
    assert "rtmp_publish_refused" in server.log_text()
    assert over[0] != 0 and "server capacity exceeded" in over[1], over
    assert code != 0 and failed.state.error == "unsupported video codec Sorenson H.263: send H.264"
    assert reset.state.status == api.IngressState.ENDPOINT_INACTIVE and reset.name == "again"


def _raw(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes on a fresh RTMP connection; what the server sends back until it closes."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(payload)
        except OSError:
            return got
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return got
            if not chunk:
                return got
            got += chunk
    raise AssertionError("the server kept a connection open after malformed bytes")


async def test_malformed_rtmp_closes_only_that_connection(tmp_path):
    server = start_ingress_server(tmp_path / "srv")
    try:
        async with lkapi(server) as lk:
            # (this one also publishes VP8: custom encoding options)
            info = await lk.ingress.create_ingress(rtmp_create("bad", "cam", video=api.IngressVideoOptions(
                options=api.IngressVideoEncodingOptions(video_codec=api.VideoCodec.VP8, frame_rate=25, layers=[
                    api.VideoLayer(quality=api.VideoQuality.HIGH, width=640, height=360, bitrate=800_000),
                    api.VideoLayer(quality=api.VideoQuality.LOW, width=320, height=180, bitrate=200_000)]))))
            port = int(info.url.rsplit(":", 1)[1].split("/")[0])
            viewer = asyncio.ensure_future(py_client(server, token("viewer", "bad"), "--seconds", "9"))
            encoder = push_rtmp(f"{info.url}/{info.stream_key}", 12, size="640x360", hz=440)
            await poll(lambda: ingress_info(lk, info.ingress_id),
                       lambda i: i.state.status == api.IngressState.ENDPOINT_PUBLISHING, what="PUBLISHING")
            handshake = b"\x03" + bytes(HANDSHAKE_SIZE) + bytes(HANDSHAKE_SIZE)
            garbage = [
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(2000),  # not RTMP at all
                handshake + b"\x43" + bytes(7),  # a chunk stream that starts without a full header
                handshake + b"\x03" + bytes(3) + b"\x7f\xff\xff\x14" + bytes(4),  # a 8 MiB+ message
                handshake + b"\x03" + bytes(3) + b"\x00\x00\x08\x14" + bytes(4) + b"\x0d" * 8,  # bad AMF0
            ]
            for g in garbage:
                await asyncio.to_thread(_raw, port, g)
            live = await ingress_info(lk, info.ingress_id)
            report = await viewer
            code, err = await wait_exit(encoder)
            after = await ingress_info(lk, info.ingress_id)
    finally:
        server.stop()
    video = next(t for t in live.state.tracks if t.type == api.TrackType.VIDEO)
    assert video.mime_type == "video/VP8" and [(v.width, v.height, v.bitrate) for v in video.layers] == \
        [(640, 360, 800_000), (320, 180, 200_000)]
    peak, sizes = tone_and_sizes(report, "cam")
    assert abs(peak - 440) < 5 and simulcast_seen(sizes, "640x360", ["640x360", "320x180"]), dump(report)
    assert not disconnected(report, "cam")
    assert code == 0, err
    assert after.state.status == api.IngressState.ENDPOINT_INACTIVE
    log = server.log_text()
    assert log.count("rtmp_protocol_error") >= 3 and ingress_failures(log) == []


async def test_delete_or_update_ends_the_live_session(tmp_path):
    hooks = await WebhookRecorder().start()
    server = start_ingress_server(tmp_path / "srv", hooks.url)
    try:
        async with lkapi(server) as lk:
            gone = await lk.ingress.create_ingress(rtmp_create("live", "deleted-cam"))
            changed = await lk.ingress.create_ingress(rtmp_create("live", "updated-cam"))
            viewer = asyncio.ensure_future(py_client(server, token("viewer", "live"), "--seconds", "12"))
            enc1 = push_rtmp(f"{gone.url}/{gone.stream_key}", 30, size="640x360")
            enc2 = push_rtmp(f"{changed.url}/{changed.stream_key}", 30, size="640x360")
            for i in (gone, changed):
                await poll(lambda i=i: ingress_info(lk, i.ingress_id),
                           lambda x: x.state.status == api.IngressState.ENDPOINT_PUBLISHING, what="PUBLISHING")
            await asyncio.sleep(2)
            deleted = await lk.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=gone.ingress_id))
            updated = await lk.ingress.update_ingress(api.UpdateIngressRequest(
                ingress_id=changed.ingress_id, participant_name="renamed"))
            code1, _ = await wait_exit(enc1, 20)
            code2, _ = await wait_exit(enc2, 20)
            report = await viewer
            remaining = (await lk.ingress.list_ingress(api.ListIngressRequest(room_name="live"))).items
            await poll(lambda: asyncio.sleep(0, hooks.ingress_events(changed.ingress_id)),
                       lambda ev: len(ev) >= 2, what="the updated ingress's webhooks")
    finally:
        server.stop()
        await hooks.stop()
    assert deleted.state.status == api.IngressState.ENDPOINT_INACTIVE
    assert updated.participant_name == "renamed" and updated.state.status == api.IngressState.ENDPOINT_INACTIVE
    assert [i.ingress_id for i in remaining] == [changed.ingress_id]
    # both participants left the room and both encoders were disconnected
    assert disconnected(report, "deleted-cam") and disconnected(report, "updated-cam"), dump(report["events"])
    assert code1 != 0 and code2 != 0
    assert hooks.ingress_events(changed.ingress_id) == ["ingress_started", "ingress_ended"]
    assert hooks.ingress_events(gone.ingress_id) == ["ingress_started", "ingress_ended"]
