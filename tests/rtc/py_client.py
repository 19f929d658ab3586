#!/usr/bin/env python3
"""The official Python realtime SDK (`livekit`, PyPI) as a test client of lkserver.

  py_client.py URL TOKEN [--publish-audio HZ] [--publish-video WxH] [--seconds S]
               [--expect-tracks N] [--single-pc on|off|default] [--send-data TEXT] ...

Prints one JSON object on stdout: what it saw (participants, tracks, audio frequency by FFT,
video frame sizes, data messages, timings). Exit code 0 unless the SDK raised.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time

import numpy as np
from livekit import rtc

from inbound_stats import sample_inbound

SR = 48000


def opts(single_pc: str, auto_subscribe: bool, dynacast: bool = False) -> rtc.RoomOptions:
    spc = None if single_pc == "default" else single_pc == "on"
    return rtc.RoomOptions(auto_subscribe=auto_subscribe, single_peer_connection=spc, dynacast=dynacast)


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("token")
    ap.add_argument("--publish-audio", type=float, default=0.0, help="sine frequency in Hz")
    ap.add_argument("--publish-video", default="", help="WxH of a generated video")
    ap.add_argument("--simulcast", action="store_true")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--single-pc", default="default")
    ap.add_argument("--no-auto-subscribe", action="store_true")
    ap.add_argument("--send-data", default="")
    ap.add_argument("--data-topic", default="t")
    ap.add_argument("--rpc-method", default="", help="register this RPC method (echo, upper-cased)")
    ap.add_argument("--call-rpc", default="", help="identity:method:payload to call")
    ap.add_argument("--mute-after", type=float, default=0.0)
    ap.add_argument("--wait-for", default="", help="identity to wait for before publishing")
    ap.add_argument("--simulate", default="", help="signal-reconnect | full-reconnect | force-tcp")
    ap.add_argument("--simulate-after", type=float, default=2.0)
    ap.add_argument("--set-metadata", default="", help="update own metadata after connecting")
    ap.add_argument("--allow-only", default="", help="only this identity may subscribe to our tracks")
    ap.add_argument("--dynacast", action="store_true")
    ap.add_argument("--sender-stats", action="store_true", help="sample the video sender's per-layer stats")
    ap.add_argument("--receiver-stats", action="store_true", help="sample received video's inbound stats")
    ap.add_argument("--video-quality", default="", help="low|medium|high: ask for this layer after --quality-after")
    ap.add_argument("--quality-after", type=float, default=3.0)
    ap.add_argument("--subscribe-after", type=float, default=0.0,
                    help="with --no-auto-subscribe: subscribe to every publication after S seconds")
    a = ap.parse_args()
    if os.environ.get("LK_CLIENT_DEBUG"):  # the SDK's own log (Rust, libwebrtc, Python) on stderr
        import logging
        os.environ["LIVEKIT_RTC_DEBUG"] = "1"
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")

    out: dict = {"events": [], "audio": {}, "video": {}, "data": [], "rpc": None, "errors": []}
    room = rtc.Room()
    t0 = time.monotonic()
    audio_buffers: dict[str, list] = {}
    first_frame: dict[str, float] = {}

    def watchdog() -> None:  # a hung SDK call still yields a report the test can show
        out["errors"].append("watchdog: the client did not finish in time")
        print(json.dumps(out, default=str), flush=True)
        os._exit(0)

    timer = threading.Timer(a.seconds + 40, watchdog)
    timer.daemon = True
    timer.start()

    def ev(name: str, **kw) -> None:
        out["events"].append({"t": round(time.monotonic() - t0, 3), "event": name, **kw})

    async def read_audio(track: rtc.Track, key: str) -> None:
        stream = rtc.AudioStream(track, sample_rate=SR, num_channels=1)
        buf = audio_buffers.setdefault(key, [])
        async for e in stream:
            if key not in first_frame:
                first_frame[key] = time.monotonic()
            buf.append(np.frombuffer(e.frame.data, dtype=np.int16).copy())

    async def receiver_stats(track: rtc.Track, key: str) -> None:
        rows = out.setdefault("receiver_stats", {}).setdefault(key, [])
        await sample_inbound(track, rows, 1.0, t0)

    async def read_video(track: rtc.Track, key: str) -> None:
        if a.receiver_stats:
            tasks.append(asyncio.ensure_future(receiver_stats(track, key)))
        stream = rtc.VideoStream(track)
        info = out["video"].setdefault(key, {"frames": 0, "sizes": {}, "timeline": []})
        async for e in stream:
            if key not in first_frame:
                first_frame[key] = time.monotonic()
            info["frames"] += 1
            size = f"{e.frame.width}x{e.frame.height}"
            info["sizes"][size] = info["sizes"].get(size, 0) + 1
            t = round(time.monotonic() - t0, 3)
            if not info["timeline"] or info["timeline"][-1][1] != size:
                info["timeline"].append([t, size])
            if "last_frame_t" in info:
                gap = t - info["last_frame_t"]
                info["max_gap"] = max(info.get("max_gap", 0.0), gap)
                if "quality_set_at" in out and t > out["quality_set_at"]:
                    info["max_gap_after_quality"] = max(info.get("max_gap_after_quality", 0.0), gap)
            info["last_frame_t"] = t

    tasks = []

    @room.on("participant_connected")
    def on_pc(p: rtc.RemoteParticipant) -> None:
        ev("participant_connected", identity=p.identity)

    @room.on("participant_disconnected")
    def on_pd(p: rtc.RemoteParticipant) -> None:
        ev("participant_disconnected", identity=p.identity)

    @room.on("track_subscribed")
    def on_ts(track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        key = f"{p.identity}/{pub.sid}"
        ev("track_subscribed", key=key, kind=int(track.kind))
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            tasks.append(asyncio.ensure_future(read_audio(track, key)))
        else:
            tasks.append(asyncio.ensure_future(read_video(track, key)))

    @room.on("track_muted")
    def on_tm(p, pub) -> None:
        ev("track_muted", identity=p.identity, sid=pub.sid)

    @room.on("track_unmuted")
    def on_tu(p, pub) -> None:
        ev("track_unmuted", identity=p.identity, sid=pub.sid)

    @room.on("data_received")
    def on_data(packet: rtc.DataPacket) -> None:
        out["data"].append({"from": packet.participant.identity if packet.participant else "",
                            "topic": packet.topic, "data": packet.data.decode(errors="replace")})

    @room.on("active_speakers_changed")
    def on_speakers(speakers) -> None:
        ev("active_speakers", identities=[s.identity for s in speakers])

    @room.on("track_unsubscribed")
    def on_tus(track, pub, p) -> None:
        ev("track_unsubscribed", key=f"{p.identity}/{pub.sid}")

    @room.on("track_unpublished")
    def on_tup(pub, p) -> None:
        ev("track_unpublished", key=f"{p.identity}/{pub.sid}")

    @room.on("track_published")
    def on_tp(pub, p) -> None:
        ev("track_published", key=f"{p.identity}/{pub.sid}")

    @room.on("moved")
    def on_moved(*args) -> None:
        ev("moved", room=room.name)

    @room.on("disconnected")
    def on_disc(reason) -> None:
        ev("disconnected", reason=str(reason))

    @room.on("room_updated")
    def on_room_updated() -> None:
        ev("room_updated", recording=room.is_recording)

    @room.on("connection_quality_changed")
    def on_quality(p, quality) -> None:
        ev("connection_quality", identity=p.identity, quality=int(quality))

    @room.on("participant_metadata_changed")
    def on_meta(p, old, new) -> None:
        ev("metadata_changed", identity=p.identity, metadata=new)

    t_connect = time.monotonic()
    try:
        await room.connect(a.url, a.token, opts(a.single_pc, not a.no_auto_subscribe, a.dynacast))
    except Exception as e:  # noqa: BLE001
        out["errors"].append(f"connect: {e}")
        print(json.dumps(out))
        return 0
    out["connect_ms"] = round((time.monotonic() - t_connect) * 1000, 1)
    out["identity"] = room.local_participant.identity
    out["sid"] = room.local_participant.sid
    out["remote_at_join"] = sorted(room.remote_participants)

    if a.rpc_method:
        @room.local_participant.register_rpc_method(a.rpc_method)
        async def handler(data: rtc.RpcInvocationData) -> str:
            ev("rpc_invoked", caller=data.caller_identity, payload=data.payload)
            return data.payload.upper()

    if a.wait_for:
        deadline = time.monotonic() + 20
        while a.wait_for not in room.remote_participants and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    if a.allow_only:
        room.local_participant.set_track_subscription_permissions(
            allow_all_participants=False,
            participant_permissions=[rtc.ParticipantTrackPermission(participant_identity=a.allow_only, allow_all=True)])

    if a.video_quality:
        levels = {"low": rtc.VideoQuality.VIDEO_QUALITY_LOW, "medium": rtc.VideoQuality.VIDEO_QUALITY_MEDIUM,
                  "high": rtc.VideoQuality.VIDEO_QUALITY_HIGH}

        async def set_quality() -> None:
            await asyncio.sleep(a.quality_after)
            for rp in room.remote_participants.values():
                for pub in rp.track_publications.values():
                    if pub.kind == rtc.TrackKind.KIND_VIDEO:
                        pub.set_video_quality(levels[a.video_quality])
            ev("quality_set", quality=a.video_quality)
            out["quality_set_at"] = time.monotonic() - t0

        tasks.append(asyncio.ensure_future(set_quality()))

    if a.subscribe_after:
        async def subscribe_later() -> None:
            await asyncio.sleep(a.subscribe_after)
            for rp in room.remote_participants.values():
                for pub in rp.track_publications.values():
                    pub.set_subscribed(True)
            ev("subscribed_manually")

        tasks.append(asyncio.ensure_future(subscribe_later()))

    publications = []
    if a.publish_audio:
        src = rtc.AudioSource(SR, 1)
        track = rtc.LocalAudioTrack.create_audio_track("tone", src)
        po = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        t = time.monotonic()
        try:
            pub = await room.local_participant.publish_track(track, po)
        except Exception as e:  # noqa: BLE001
            out["errors"].append(f"publish audio: {e}")
            pub = None
        out["publish_audio_ms"] = round((time.monotonic() - t) * 1000, 1)
        out["published_at"] = time.time()
        if pub is not None:
            publications.append(pub)
            out["audio_sid"] = pub.sid

        async def tone() -> None:
            n, phase = SR // 100, 0
            start = time.monotonic()
            while True:
                idx = np.arange(n) + phase
                phase += n
                data = (np.sin(2 * np.pi * a.publish_audio * idx / SR) * 12000).astype(np.int16)
                await src.capture_frame(rtc.AudioFrame(data.tobytes(), SR, 1, n))
                ahead = start + phase / SR - time.monotonic()
                if ahead > 0.05:
                    await asyncio.sleep(ahead - 0.04)

        tasks.append(asyncio.ensure_future(tone()))

    if a.publish_video:
        w, h = (int(x) for x in a.publish_video.split("x"))
        vsrc = rtc.VideoSource(w, h)
        vtrack = rtc.LocalVideoTrack.create_video_track("cam", vsrc)
        vo = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=a.simulcast)
        vpub = await room.local_participant.publish_track(vtrack, vo)
        publications.append(vpub)
        out["video_sid"] = vpub.sid

        async def frames() -> None:
            i = 0
            rng = np.random.default_rng(1)
            while True:
                img = np.zeros((h, w, 4), dtype=np.uint8)
                img[:, :, 0] = (i * 7) % 255
                img[: h // 2, : w // 2, 1] = 200
                img[:, :, 3] = 255
                if i % 10 == 0:
                    img[h // 2:, w // 2:, 2] = rng.integers(0, 255, (h - h // 2, w - w // 2), dtype=np.uint8)
                vsrc.capture_frame(rtc.VideoFrame(w, h, rtc.VideoBufferType.RGBA, img.tobytes()))
                i += 1
                await asyncio.sleep(1 / 15)

        tasks.append(asyncio.ensure_future(frames()))

        if a.sender_stats:
            out["sender_stats"] = []

            async def sample() -> None:
                while True:
                    await asyncio.sleep(0.5)
                    try:
                        stats = await vtrack.get_stats()
                    except Exception:  # noqa: BLE001
                        continue
                    row = {"t": round(time.monotonic() - t0, 2)}
                    for st in stats:
                        if st.WhichOneof("stats") == "outbound_rtp":
                            o = st.outbound_rtp
                            row[o.outbound.rid or "-"] = [o.sent.bytes_sent, o.outbound.active,
                                                          o.outbound.frame_width, o.outbound.frame_height,
                                                          o.outbound.frames_sent, o.outbound.nack_count,
                                                          o.outbound.retransmitted_packets_sent]
                    out["sender_stats"].append(row)

            tasks.append(asyncio.ensure_future(sample()))

    if a.send_data:
        async def send_data() -> None:
            for i in range(10):
                await room.local_participant.publish_data(f"{a.send_data}-{i}".encode(), reliable=True, topic=a.data_topic)
                await asyncio.sleep(0.1)

        tasks.append(asyncio.ensure_future(send_data()))

    if a.call_rpc:
        dest, method, payload = a.call_rpc.split(":", 2)

        async def call() -> None:
            deadline = time.monotonic() + 20
            while dest not in room.remote_participants and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            try:
                out["rpc"] = await room.local_participant.perform_rpc(destination_identity=dest, method=method, payload=payload)
            except Exception as e:  # noqa: BLE001
                out["rpc"] = f"error: {e}"

        tasks.append(asyncio.ensure_future(call()))

    if a.mute_after and publications:
        async def mute() -> None:
            await asyncio.sleep(a.mute_after)
            publications[0].track.mute()
            ev("muted_self")

        tasks.append(asyncio.ensure_future(mute()))

    if a.simulate:
        kinds = {"signal-reconnect": rtc.SimulateScenarioKind.SIMULATE_SIGNAL_RECONNECT,
                 "full-reconnect": rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT,
                 "force-tcp": rtc.SimulateScenarioKind.SIMULATE_FORCE_TCP}

        async def simulate() -> None:
            await asyncio.sleep(a.simulate_after)
            sid_before = room.local_participant.sid
            try:
                await room.simulate_scenario(kinds[a.simulate])
                ev("simulated", scenario=a.simulate)
            except Exception as e:  # noqa: BLE001
                out["errors"].append(f"simulate: {e}")
            out["sid_before_simulate"] = sid_before

        tasks.append(asyncio.ensure_future(simulate()))

    @room.on("reconnecting")
    def on_reconnecting() -> None:
        ev("reconnecting")

    @room.on("reconnected")
    def on_reconnected() -> None:
        ev("reconnected")

    if a.set_metadata:
        try:
            await room.local_participant.set_metadata(a.set_metadata)
            ev("metadata_set")
        except Exception as e:  # noqa: BLE001
            out["errors"].append(f"set_metadata: {e}")

    await asyncio.sleep(a.seconds)
    out["sid_final"] = room.local_participant.sid
    out["room_final"] = room.name
    out["remote_final"] = sorted(room.remote_participants)
    out["connection_state"] = int(room.connection_state)
    for key, chunks in audio_buffers.items():
        if not chunks:
            continue
        pcm = np.concatenate(chunks).astype(np.float64)
        tail = pcm[len(pcm) // 4:] if len(pcm) > SR else pcm
        spec = np.abs(np.fft.rfft(tail * np.hanning(len(tail))))
        freq = float(np.fft.rfftfreq(len(tail), 1 / SR)[int(np.argmax(spec))])
        out["audio"][key] = {"samples": int(len(pcm)), "peak_hz": round(freq, 1),
                             "rms": round(float(np.sqrt(np.mean(tail ** 2))), 1)}
    out["first_frame_s"] = {k: round(v - t0, 3) for k, v in first_frame.items()}
    for t in tasks:
        t.cancel()
    try:
        await asyncio.wait_for(room.disconnect(), 10)
    except asyncio.TimeoutError:
        out["errors"].append("disconnect timed out")
    timer.cancel()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    # the report is out; skip interpreter finalization, which can race the SDK's Rust runtime
    # threads (a tokio worker aborts with "panic in a function that cannot unwind" while module
    # globals are torn down: exit status -6 after a complete report, about 1 client in 30 under load)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
