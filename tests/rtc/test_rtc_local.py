"""Participants hosted in the server (egress, ingress, SIP build on them) with an official client.

The server runs in this test's process so the test can drive a LocalParticipant directly; the
other side of the room is the official Python realtime SDK in a subprocess.
"""

from __future__ import annotations

import asyncio
import fractions
import struct

import av
import numpy as np
from livekit.protocol import models as pm

from conftest import API_KEY, API_SECRET, free_port
from lkserver.config import load_config
from lkserver.rtc.local import LocalParticipant
from lkserver.rtc.negotiation import TrackCodec
from lkserver.rtc.rtp import RTP_HEADER, parse_rtp
from lkserver.server import Server
from rtcfix import py_client, require_netns, token
from test_rtc_python_sdk import assert_tone


class InProcess:
    def __init__(self, server: Server) -> None:
        self.server = server

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"


async def start_server(tmp_path) -> Server:
    require_netns()
    cfg = load_config(config_body=f"""
development: true
keys: {{{API_KEY}: {API_SECRET}}}
rtc: {{udp_port: {free_port()}, tcp_port: 0, node_ip: 127.0.0.1}}
""", env={}, port=0, data_dir=str(tmp_path), log_level="warning")
    server = Server(cfg)
    await server.start()
    return server


def opus_packets(hz: float, seconds: float) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "mono", "s16"
    enc.time_base = fractions.Fraction(1, 48000)
    out, n = [], 960
    for i in range(int(seconds * 50)):
        t = (np.arange(n) + i * n) / 48000
        frame = av.AudioFrame.from_ndarray((np.sin(2 * np.pi * hz * t) * 12000).astype(np.int16)[None, :],
                                           format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i * n
        out.extend(bytes(p) for p in enc.encode(frame))
    return out


async def test_local_publisher_heard_by_official_client(tmp_path):
    server = await start_server(tmp_path)
    try:
        me = await LocalParticipant.join(server.rtc, "local-pub", "ingress-bot", name="Bot",
                                         kind=pm.ParticipantInfo.Kind.INGRESS)
        track = me.publish_track(TrackCodec("audio/opus", 48000, 2), pm.TrackSource.MICROPHONE, "tone")
        listener = asyncio.ensure_future(py_client(InProcess(server), token("ear", "local-pub"), "--seconds", "5"))
        packets = opus_packets(523.0, 7.0)
        for i, payload in enumerate(packets):
            track.write_rtp(RTP_HEADER.pack(0x80, track.pt, i & 0xFFFF, i * 960, track.ssrc) + payload)
            await asyncio.sleep(0.02)
            if listener.done():
                break
        report = await listener
        parts = [pm.ParticipantInfo.FromString(p.SerializeToString())
                 for p in server.rooms.list_participants("local-pub")]
        await me.leave()
    finally:
        await server.stop()
    assert "remote_at_join" in report, report["errors"]  # the client connected
    assert "ingress-bot" in report["remote_at_join"] or any(
        e["identity"] == "ingress-bot" for e in report["events"] if e["event"] == "participant_connected")
    assert_tone(report, "ingress-bot", 523)
    bot = next(p for p in parts if p.identity == "ingress-bot")
    assert bot.kind == pm.ParticipantInfo.Kind.INGRESS and len(bot.tracks) == 1


async def test_local_subscriber_receives_official_client_audio(tmp_path):
    server = await start_server(tmp_path)
    try:
        me = await LocalParticipant.join(server.rtc, "local-sub", "recorder", hidden=True,
                                         kind=pm.ParticipantInfo.Kind.EGRESS, can_publish=False)
        received: list[bytes] = []
        published = asyncio.Event()

        def on_published(track) -> None:
            me.subscribe(track.sid, received.append)
            published.set()

        me.on_track_published = on_published
        talker = asyncio.ensure_future(py_client(InProcess(server), token("talker", "local-sub"), "--seconds", "5",
                                                 "--publish-audio", "440"))
        await asyncio.wait_for(published.wait(), 15)
        report = await talker
        await me.leave()
    finally:
        await server.stop()
    assert "recorder" not in report["remote_final"] and "recorder" not in report["remote_at_join"]  # hidden
    assert len(received) > 100
    headers = [parse_rtp(p) for p in received]
    assert len({h.ssrc for h in headers}) == 1 and {h.pt for h in headers} == {111}
    seqs = [h.seq for h in headers]
    assert all(((b - a) & 0xFFFF) == 1 for a, b in zip(seqs, seqs[1:]))
    dec = av.CodecContext.create("libopus", "r")
    pcm = []
    for p, h in zip(received, headers):
        for frame in dec.decode(av.Packet(p[h.payload_offset:])):
            pcm.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0])
    samples = np.concatenate(pcm).astype(np.float64)[48000:]
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    peak = np.fft.rfftfreq(len(samples), 1 / 48000)[int(np.argmax(spectrum))]
    assert abs(peak - 440) < 5
    assert struct.unpack_from("!I", received[0], 8)[0] == headers[0].ssrc
