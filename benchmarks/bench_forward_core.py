#!/usr/bin/env python3
"""The forwarding hot path alone: UpTrack -> N DownTracks -> SRTP protect -> UDP sendto.

Runs lkserver's own forwarding objects in one process on uvloop, with real libsrtp contexts
(one per subscriber) and a real UDP socket, so it measures what the server spends per
forwarded packet in Python without the clients' share of the machine. The whole-server figure
comes from bench_rtc.py.
  .venv/bin/python benchmarks/bench_forward_core.py [--subs 1,10,50] [--packets 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import uvloop  # noqa: E402
from pylibsrtp import Policy, Session  # noqa: E402

from lkserver.rtc.forward import DownTrack, TrackReceiver  # noqa: E402
from lkserver.rtc.net import UdpMux  # noqa: E402
from lkserver.rtc.rtp import RTP_HEADER, abs_send_time_extension, parse_rtp  # noqa: E402
from lkserver.rtc.srtp import SrtpContext  # noqa: E402

KEY = os.urandom(30)


def context(kind: int) -> SrtpContext:
    p = Policy(key=KEY, ssrc_type=kind)
    p.allow_repeat_tx = True
    p.window_size = 1024
    return SrtpContext(Session(p))


async def run(subs: int, packets: int, size: int, video: bool) -> float:
    loop = asyncio.get_running_loop()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)

    class Network:
        by_ufrag: dict = {}

    _, mux = await loop.create_datagram_endpoint(lambda: UdpMux(Network()), local_addr=("127.0.0.1", 0))
    path = mux.path_for(sink.getsockname())
    codec, clock = ("vp8", 90000) if video else ("opus", 48000)
    receiver = TrackReceiver("TR_bench", codec, clock, video, lambda ssrc: None, 0 if video else 1)
    up = receiver.add_layer(1234, 0)
    for i in range(subs):
        tx = context(Policy.SSRC_ANY_OUTBOUND)

        def send(packet: bytes, tx: SrtpContext = tx) -> None:
            path.send(tx.protect(packet))

        down = DownTrack(receiver, f"PA_{i}", 1000 + i, 96 if video else 111, send, lambda b: None)
        if video:  # what a REMB-capable video subscriber gets: abs-send-time on every packet
            down.ext_fn = lambda: abs_send_time_extension(3, time.time())
        receiver.subscribe(down)
    rx = context(Policy.SSRC_ANY_INBOUND)
    txp = context(Policy.SSRC_ANY_OUTBOUND)
    ext = bytes([0xBE, 0xDE, 0, 1, 0x10, 0x80, 0, 0])  # audio level, one-byte form
    payload = os.urandom(size)
    if video:  # a VP8 keyframe first, then delta frames (VP8 descriptor with a 15-bit picture id)
        key, delta = bytes([0x90, 0x80, 0x80, 0x01, 0x10]), bytes([0x90, 0x80, 0x80, 0x02, 0x11])
        payloads = [key + payload] + [delta + payload] * (packets - 1)
    else:
        payloads = [payload] * packets
    wire = [txp.protect(RTP_HEADER.pack(0x90, 96 if video else 111, seq & 0xFFFF, seq * 960, 1234) + ext + p)
            for seq, p in enumerate(payloads)]
    t0 = time.process_time()
    for i, data in enumerate(wire):
        plain = rx.unprotect(data)  # as the publisher transport does
        up.on_rtp(plain, parse_rtp(plain), 0.0)
        if i % 100 == 99:
            await asyncio.sleep(0)
            try:
                while True:
                    sink.recv(2048)
            except BlockingIOError:
                pass
    cpu = time.process_time() - t0
    forwarded = sum(d.packets_sent for d in receiver.downs)
    assert forwarded >= 0.99 * packets * subs, (forwarded, packets * subs)
    mux.close()
    sink.close()
    return cpu / (packets * subs) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subs", default="1,10,50")
    ap.add_argument("--packets", type=int, default=20000)
    a = ap.parse_args()
    print("| packet | subscribers | µs CPU per forwarded packet | forwarded packets/s per core |")
    print("|---|---|---|---|")
    for name, size, video in (("Opus 150 B", 130, False), ("video 1100 B", 1080, True)):
        for n in (int(x) for x in a.subs.split(",")):
            us = uvloop.run(run(n, max(a.packets // n, 2000), size, video))
            print(f"| {name} | {n} | {us:.2f} | {1e6 / us:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
